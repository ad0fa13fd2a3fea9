"""The compiled build (``WSGIBRIDGE_COMPILE=1``, setup.py) behaves as the pure one.

``wsgibridge.compiled`` names the build that was imported and is true to its
files: the modules setup.py lists are extension modules exactly when it is
True, every other module is Python in both builds.  The other tests are the
places where compiling could change behaviour and must not: classes users
subclass in Python, a class attribute a subclass overrides, the PEP 3333
callables' own errors for arguments of the wrong type, ``--version``.
``.ci/run`` runs the whole suite against both builds.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

import pytest

import wsgibridge
from wsgibridge import (
    AccessRecord,
    FileWrapper,
    ResponseHeaderError,
    ResponseWriter,
    WSGIRequestHandler,
)
from wsgibridge._types import Environ, StartResponse
from wsgibridge.accesslog import AccessLogFormat
from wsgibridge.cli import main
from wsgibridge.http.body import ContentLengthInput
from wsgibridge.http.reader import SocketReader

from .conftest import ServerFactory, exchange
from .importroot import IMPORT_ROOT

ROOT = Path(__file__).resolve().parent.parent


def setup_lists() -> tuple[list[str], dict[str, str]]:
    """setup.py's MODULES and EXCLUDED, read without running it (it calls setup())."""
    found: dict[str, Any] = {}
    for node in ast.parse((ROOT / "setup.py").read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("MODULES", "EXCLUDED"):
                    found[target.id] = ast.literal_eval(node.value)
    return found["MODULES"], found["EXCLUDED"]


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_extension(module: Any) -> bool:
    return str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))


def test_setup_lists_existing_modules_once() -> None:
    modules, excluded = setup_lists()
    assert modules == sorted(modules)
    assert len(set(modules)) == len(modules)
    assert set(modules).isdisjoint(excluded)
    for path in [*modules, *excluded]:
        assert (ROOT / path).is_file(), path
    assert all(reason for reason in excluded.values())


def test_compiled_is_true_to_the_modules_imported() -> None:
    """The listed modules are extension modules iff ``compiled``; all others are Python."""
    assert isinstance(wsgibridge.compiled, bool)
    listed = {module_name(path) for path in setup_lists()[0]}
    names = {
        info.name
        for info in pkgutil.walk_packages(wsgibridge.__path__, "wsgibridge.")
        if not info.name.endswith("__main__")  # importing it runs the command
    }
    assert listed <= names | {"wsgibridge"}
    for name in sorted(names | {"wsgibridge"}):
        module = importlib.import_module(name)
        expected = wsgibridge.compiled and name in listed
        assert is_extension(module) is expected, f"{name}: {module.__file__}"


def test_the_run_imports_the_build_it_means_to_test() -> None:
    """.ci/run sets WSGIBRIDGE_EXPECT_COMPILED: 0 for the editable checkout, 1 for the
    compiled venv (whose wsgibridge must not be the checkout's, found first on sys.path)."""
    expected = os.environ.get("WSGIBRIDGE_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("WSGIBRIDGE_EXPECT_COMPILED is not set (.ci/run sets it for each run)")
    assert wsgibridge.compiled is (expected == "1"), wsgibridge.__file__
    in_checkout = Path(wsgibridge.__file__).resolve().is_relative_to(ROOT / "wsgibridge")
    assert in_checkout is (expected != "1"), wsgibridge.__file__


def test_a_child_process_imports_the_same_build(tmp_path: Path) -> None:
    """The suite's children put IMPORT_ROOT on PYTHONPATH: they run the build under test."""
    env = dict(os.environ, PYTHONPATH=IMPORT_ROOT)
    child = subprocess.run(
        [sys.executable, "-c", "import wsgibridge; print(wsgibridge.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == wsgibridge.__file__


def test_version_names_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    build = "compiled with mypyc" if wsgibridge.compiled else "pure Python"
    assert capsys.readouterr().out == f"wsgibridge {wsgibridge.__version__} ({build})\n"


# -- what compiling could change -----------------------------------------------------------


class Sink:
    """A ResponseSink that keeps what a writer sends."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.headers = headers
        self.body += body

    def send_body(self, data: bytes) -> None:
        self.body += data

    def send_file(self, file: Any, offset: int, count: int) -> int:
        raise OSError("no sendfile here")


def two_chunks(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"one ", b"two"]


def test_a_python_subclass_of_response_writer_overrides_methods_and_class_attributes() -> None:
    """Its ``write`` is what ``respond`` calls for each chunk, its ``server_software``
    is the Server header: the compiled ``respond`` does not bypass either."""
    written: list[object] = []

    class Counting(ResponseWriter):
        server_software = "counting/1"

        def write(self, data: object) -> None:
            written.append(data)
            super().write(data)

    sink = Sink()
    writer = Counting(sink, method="GET", http11=True, client_keep_alive=True)
    writer.respond(two_chunks, {})
    assert written == [b"one ", b"two"]
    assert ("Server", "counting/1") in sink.headers
    assert sink.body.endswith(b"two\r\n0\r\n\r\n")  # chunked: the length was unknown


def test_a_handler_subclass_swaps_the_writer_and_the_input(serve: ServerFactory) -> None:
    """``writer_class`` and ``input_class`` take Python subclasses of the compiled classes."""

    class Shouting(ContentLengthInput):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(size).upper()

    class Branded(ResponseWriter):
        server_software = "branded/2"

    class Handler(WSGIRequestHandler):
        writer_class = Branded
        input_class = Shouting

    def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(echo, handler_class=Handler)
    raw = exchange(
        server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.endswith(b"\r\nServer: branded/2")
    assert body == b"HELLO"


def test_an_input_subclass_override_is_used_by_the_inherited_methods() -> None:
    """``readlines`` and iteration (compiled) call the subclass's ``readline``."""

    class Numbered(ContentLengthInput):
        lines = 0

        def readline(self, size: int | None = -1) -> bytes:
            line = super().readline(size)
            if line:
                self.lines += 1
                return b"%d:%s" % (self.lines, line)
            return line

    data = b"a\nb\nc\n"
    stream = Numbered(SocketReader(io.BytesIO(data).read), len(data))
    assert stream.readlines() == [b"1:a\n", b"2:b\n", b"3:c\n"]


def test_a_file_wrapper_subclass_is_iterated_and_recognised() -> None:
    class Lower(FileWrapper):
        def __iter__(self) -> Iterator[bytes]:
            return (chunk.lower() for chunk in super().__iter__())

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "3")])
        return Lower(io.BytesIO(b"ABC"), 1)

    sink = Sink()
    ResponseWriter(sink, method="GET", http11=True, client_keep_alive=True).respond(app, {})
    assert sink.body == b"abc"


def test_an_access_record_subclass_with_a_field_of_its_own() -> None:
    """slots=True, as AccessRecord itself: the reason accesslog.py stays interpreted (the
    subclass's slots would hide a native class's fields from compiled code)."""

    @dataclasses.dataclass(slots=True, kw_only=True)
    class Tagged(AccessRecord):
        tag: str = ""

    placeholders: dict[str, Any] = {"str": "-", "int": 0, "float": 0.0}
    values = {
        field.name: placeholders.get(str(field.type), ())
        for field in dataclasses.fields(AccessRecord)
        if field.default is dataclasses.MISSING
    }
    values.update(client="192.0.2.1", status=204, method="GET")
    record = Tagged(**values, tag="mine")
    assert record.tag == "mine"
    assert AccessLogFormat("{client} {method} {status}").render(record) == "192.0.2.1 GET 204"


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (b"200 OK", [], "status must be a str, not bytes"),
        ("200 OK", (("Content-Type", "text/plain"),), "must be a list"),
        ("200 OK", [(b"Content-Type", b"text/plain")], "must be str, not bytes"),
    ],
)
def test_start_response_refuses_wrong_types_in_its_own_words(
    status: object, headers: object, error: str
) -> None:
    """A compiled function checks its arguments' declared types: the writer's callables
    take ``object`` so an app's mistake still gets the PEP 3333 message, not a TypeError."""
    writer = ResponseWriter(Sink(), method="GET", http11=True, client_keep_alive=True)
    with pytest.raises(ResponseHeaderError, match=error):
        writer.start_response(status, headers)


def text_body(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["text"]


def text_file(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return FileWrapper(io.StringIO("text"))  # type: ignore[arg-type]  # the app's mistake


@pytest.mark.parametrize("app", [text_body, text_file])
def test_a_str_in_the_body_is_the_apps_error_in_the_peps_words(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a TypeError from a compiled loop: ``write`` says what was wrong, as in pure Python."""
    writer = ResponseWriter(Sink(), method="GET", http11=True, client_keep_alive=True)
    with caplog.at_level("ERROR"):
        writer.respond(app, {})
    assert writer.status_code == 500
    assert "the application sent str where bytes belong: 'text'" in caplog.text
