"""A small Flask application served by wsgibridge.

Run it from the project root with any of::

    wsgibridge examples.flask_app:app
    wsgibridge 'examples.flask_app:create_app()'
    python examples/flask_app.py          # wsgibridge.serve on port 8000

Routes:

* ``GET /`` a plain-text greeting;
* ``GET /json`` a JSON document;
* ``POST /echo`` the length of the request body, as JSON;
* anything else: a JSON 404.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    """Build the application (also usable as ``examples.flask_app:create_app()``)."""
    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> Response:
        return Response("Hello from Flask on wsgibridge!\n", mimetype="text/plain")

    @flask_app.get("/json")
    def json_document() -> Response:
        return jsonify(server="wsgibridge", framework="flask", ok=True)

    @flask_app.post("/echo")
    def echo() -> Response:
        # get_data() reads the whole body; fine for an example, not for big uploads.
        return jsonify(length=len(request.get_data(cache=False)))

    @flask_app.errorhandler(404)
    def not_found(error: Exception) -> tuple[Response, int]:
        return jsonify(error="not found", path=request.path), 404

    return flask_app


app = create_app()

if __name__ == "__main__":
    from wsgibridge import serve

    serve(app, port=8000)
