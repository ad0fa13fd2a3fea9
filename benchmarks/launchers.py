"""The servers without a command line of their own, started as a subprocess by ``run.py``::

    python launchers.py KIND --port PORT --app apps:hello [--host 127.0.0.1]

KIND is one of

  wsgiref   ``wsgiref.simple_server.make_server`` (one thread, HTTP/1.0), with
            the per-request log line switched off and the listen backlog
            raised from socketserver's 5 to 1024 (with 5, clients that
            reconnect after every response overflow it and get resets);
  werkzeug  ``werkzeug.serving.make_server(threaded=True)`` - what
            ``run_simple`` and ``flask run`` serve with - logger at ERROR;
  waitress  ``waitress.serve(app, host=, port=)``, defaults (4 threads);
  cheroot   ``cheroot.wsgi.Server((host, port), app)``, defaults (10 threads);
  bhrh      the bare standard library: ``http.server.ThreadingHTTPServer`` and a
            ``BaseHTTPRequestHandler`` (HTTP/1.1) answering canned bytes, head
            and body in one send, no WSGI at all.  What a server built on
            ``http.server`` costs without replacing its parser: the ceiling for
            wsgibridge's design.

Each launcher turns SIGTERM into KeyboardInterrupt, so the server stops
through its normal path, with a watchdog that exits the process if that path
hangs.  Standard library only, apart from the server being launched.  What
each server is, and how the others are started, is ``servers.py``.
"""

from __future__ import annotations

import argparse
import email.utils
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import apps  # this folder: first on sys.path when this file runs

EXIT_WATCHDOG = 5.0  # seconds a launcher may take to stop after SIGTERM


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Some servers swallow KeyboardInterrupt when it lands inside a request,
    # so a daemon timer makes sure the process goes away regardless.
    timer = threading.Timer(EXIT_WATCHDOG, os._exit, (0,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def serve_until_interrupted(server: Any) -> None:
    """``serve_forever`` until SIGTERM (turned into KeyboardInterrupt), then close."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def load_app(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "application")


def run_wsgiref(host: str, port: int, spec: str) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(WSGIServer):
        # socketserver's backlog of 5 overflows when 16 clients reconnect after
        # every response (wsgiref speaks HTTP/1.0), and wrk then counts resets.
        request_queue_size = 1024

    server = make_server(
        host, port, load_app(spec), server_class=Server, handler_class=QuietHandler
    )
    serve_until_interrupted(server)


def run_werkzeug(host: str, port: int, spec: str) -> None:
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server(host, port, load_app(spec), threaded=True)
    serve_until_interrupted(server)


def run_waitress(host: str, port: int, spec: str) -> None:
    waitress: Any = importlib.import_module("waitress")  # untyped
    try:
        waitress.serve(load_app(spec), host=host, port=port)
    except KeyboardInterrupt:
        pass


def run_cheroot(host: str, port: int, spec: str) -> None:
    wsgi: Any = importlib.import_module("cheroot.wsgi")
    server = wsgi.Server((host, port), load_app(spec))
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


# -- bhrh: the bare standard-library handler ---------------------------------------------


def canned_response(app: str) -> tuple[bytes, bytes | None]:
    """(head lines after status/Server/Date, body) for a canned app; body None: computed."""
    if app == "hello":
        return b"Content-Type: text/plain\r\nContent-Length: 13\r\n", apps.BODY
    if app == "hello_nolen":
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(apps.BODY), apps.BODY)
        return b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n", chunked
    if app == "big":
        body = apps.BIG_CHUNK * apps.BIG_CHUNKS
        head = b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % len(body)
        return head, body
    if app == "echo":
        return b"Content-Type: text/plain\r\n", None
    raise SystemExit(f"bhrh: no canned response for app {app!r}")


class _DateCache:
    """The Date header value, formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.value = email.utils.formatdate(now, usegmt=True).encode("ascii")
            self.second = now
        return self.value


def send_vectored(sock: socket.socket, parts: list[bytes]) -> None:
    """Send every part with as few ``sendmsg`` calls as the kernel allows (no joining)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def make_bhrh_handler(app: str) -> type[BaseHTTPRequestHandler]:
    head, body = canned_response(app)
    dates = _DateCache()

    class CannedHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wsgibridge
        server_version = "bhrh"
        sys_version = ""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, payload: bytes, extra: bytes = b"") -> None:
            close = b"Connection: close\r\n" if self.close_connection else b""
            status = b"HTTP/1.1 200 OK\r\nServer: bhrh\r\nDate: "
            parts = [status, dates.get(), b"\r\n", head, extra, close, b"\r\n", payload]
            if len(payload) <= 65536:
                parts = [b"".join(parts)]  # one small buffer, one send
            send_vectored(self.connection, parts)

        def do_GET(self) -> None:
            if body is None:
                self.do_POST()
            else:
                self._answer(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            remaining = length
            while remaining > 0:
                data = self.rfile.read(min(remaining, apps.READ_SIZE))
                if not data:
                    break
                remaining -= len(data)
            if body is not None:
                self._answer(body)
                return
            out = b"%d" % (length - remaining)
            self._answer(out, b"Content-Length: %d\r\n" % len(out))

    return CannedHandler


def run_bhrh(host: str, port: int, spec: str) -> None:
    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the listen backlog wsgibridge uses by default

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], OSError):  # a client reset is not news
                super().handle_error(request, client_address)

    server = Server((host, port), make_bhrh_handler(spec.partition(":")[2]))
    serve_until_interrupted(server)


LAUNCHERS: dict[str, Callable[[str, int, str], None]] = {
    "wsgiref": run_wsgiref,
    "werkzeug": run_werkzeug,
    "waitress": run_waitress,
    "cheroot": run_cheroot,
    "bhrh": run_bhrh,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start one benchmark server.")
    parser.add_argument("kind", choices=sorted(LAUNCHERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="apps:hello")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    LAUNCHERS[args.kind](args.host, args.port, args.app)


if __name__ == "__main__":
    main()
