"""The access log's sink: batched writes that lose no line, keep the order, and follow logrotate.

In memory and on files in ``tmp_path``; the server-level tests (a stop
writes every line at once, the ``logging`` path when a program adds its own
handler) use a real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from wsgibridge import WSGIRequestHandler, make_server
from wsgibridge.accesslog import (
    DEFAULT_FORMAT,
    JSON_FIELD_NAMES,
    JSON_FORMAT,
    AccessLogFormat,
    AccessRecord,
)
from wsgibridge.serving import accesssink
from wsgibridge.serving.accesssink import AccessSink, direct_sink, flush_all, open_sink

LINE = '127.0.0.1 - - [23/Nov/2026:00:42:24 +0000] "GET /x HTTP/1.1" 200 13 0.56ms'


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A private logger, not propagating; its handlers are removed and closed after."""
    log = logging.getLogger(f"wsgibridge.test.accesssink.{request.node.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "stream"), [("stderr", "err"), ("stdout", "out"), ("-", "out")])
def test_standard_streams(
    target: str, stream: str, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = open_sink(target)
    assert sink.stream is (sys.stderr if stream == "err" else sys.stdout)
    logger.addHandler(sink)
    logger.info(LINE)
    logger.info("%s", "100%")  # logging's own %-args still work through "%(message)s"
    sink.flush()
    captured = capsys.readouterr()
    assert getattr(captured, stream) == f"{LINE}\n100%\n"
    assert getattr(captured, "out" if stream == "err" else "err") == ""
    sink.close()
    assert not sys.stdout.closed and not sys.stderr.closed


def test_default_is_stderr_and_the_formatter_is_the_bare_message() -> None:
    sink = open_sink()
    try:
        assert sink.stream is sys.stderr
        assert sink.formatter is not None
        assert sink.formatter._fmt == "%(message)s"
    finally:
        sink.close()


def test_empty_target_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        open_sink("")


def test_file_is_created_0640_at_once_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    sink = open_sink(str(path))
    try:
        assert path.exists()  # opened at once, so a bad path fails at startup
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()
        sink.write_line(LINE)
        sink.flush()
        assert path.read_text(encoding="utf-8") == f"{LINE}\n"
        sink.write_line("second")
        sink.flush()
        assert path.read_text(encoding="utf-8") == f"{LINE}\nsecond\n"
    finally:
        sink.close()


def test_file_keeps_an_existing_files_lines_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("old line\n", encoding="utf-8")
    path.chmod(0o600)
    sink = open_sink(str(path))
    sink.write_line(LINE)
    sink.close()
    assert path.read_text(encoding="utf-8") == f"old line\n{LINE}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    sink.write_line("/caf\xe9/\u20ac")
    sink.close()
    assert path.read_bytes() == "/caf\xe9/\u20ac\n".encode()


def test_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    """logrotate without copytruncate moves the file away: the next batch makes a new one."""
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    try:
        sink.write_line("before")
        sink.flush()
        path.rename(tmp_path / "access.log.1")
        sink.write_line("after")
        sink.flush()
        assert (tmp_path / "access.log.1").read_text(encoding="utf-8") == "before\n"
        assert path.read_text(encoding="utf-8") == "after\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()
        path.unlink()  # removed outright: made again too
        sink.write_line("again")
        sink.flush()
        assert path.read_text(encoding="utf-8") == "again\n"
    finally:
        sink.close()


def test_close_writes_what_waits_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    sink.write_line("x")
    stream = sink.stream
    sink.close()
    assert stream.closed
    assert path.read_text(encoding="utf-8") == "x\n"
    assert sink._flusher is None or not sink._flusher.is_alive()


def test_file_in_a_missing_directory_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_sink(str(tmp_path / "no-such-dir" / "access.log"))


def test_a_write_error_is_said_once_on_stderr_and_serving_goes_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sink = open_sink(str(tmp_path / "access.log"))
    try:
        sink.stream.close()  # as a full disk or a vanished device would fail the write
        for _ in range(3):
            sink.write_line("lost")
            sink.flush()
        err = capfd.readouterr().err
        assert err.count("cannot write 1 access log line(s)") == 1
    finally:
        sink.close()


# -- batching --------------------------------------------------------------------------------


def test_a_line_is_written_by_the_timer_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    try:
        sink.write_line(LINE)
        assert wait_for(lambda: path.read_text(encoding="utf-8") == f"{LINE}\n")
        assert sink._flusher is not None and sink._flusher.name == "wsgibridge-access-log"
    finally:
        sink.close()


def test_a_full_batch_is_written_before_the_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accesssink, "FLUSH_INTERVAL", 60.0)
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    try:
        for _ in range(accesssink.BATCH_LINES):
            sink.write_line(LINE)
        size = accesssink.BATCH_LINES * (len(LINE) + 1)
        assert wait_for(lambda: path.stat().st_size == size)
    finally:
        sink.close()


def test_a_flusher_far_behind_makes_the_writer_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded memory: past MAX_PENDING_LINES the request's thread writes the batch itself."""
    monkeypatch.setattr(accesssink, "MAX_PENDING_LINES", 3)
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    try:
        with sink._write_lock:  # the flusher is stuck in a slow write
            sink.write_line(LINE)
            sink.write_line(LINE)
        sink.write_line(LINE)  # this call writes, before it returns
        assert path.read_text(encoding="utf-8") == f"{LINE}\n" * 3
        assert not sink._queue
    finally:
        sink.close()


def test_lines_from_many_threads_are_all_written_each_threads_in_order(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    per_thread = 3000

    def write(name: int) -> None:
        for i in range(per_thread):
            sink.write_line(f"{name} {i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 * per_thread
    for n in range(4):
        assert [int(line.split()[1]) for line in lines if line.split()[0] == str(n)] == list(
            range(per_thread)
        )


def test_logging_records_are_batched_too(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    logger.addHandler(sink)
    logger.info("one %s", "line")
    sink.flush()
    assert path.read_text(encoding="utf-8") == "one line\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_neither_duplicates_nor_loses_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    try:
        sink.write_line("parent before fork")  # waiting in memory when fork() runs
        pid = os.fork()
        if pid == 0:  # the child: its own sink state, the parent's line not in it
            code = 1
            try:
                sink.write_line("child")
                flush_all()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        sink.write_line("parent after fork")
        sink.flush()
        assert path.read_text(encoding="utf-8").splitlines() == [
            "parent before fork",
            "child",
            "parent after fork",
        ]
    finally:
        sink.close()


# -- the server's choice: the sink directly, or logging --------------------------------------


def standalone_logger(level: int = logging.INFO) -> logging.Logger:
    """A logger outside logging's manager, not propagating.

    pytest adds its capture handler to every registered non-propagating
    logger, and that would be a second handler.
    """
    logger = logging.Logger("wsgibridge.access.standalone", level)
    logger.propagate = False
    return logger


def test_direct_sink_only_while_it_is_the_loggers_one_handler() -> None:
    logger = standalone_logger()
    assert direct_sink(logger) is None  # no handler: logging decides (propagation)
    sink = AccessSink("stderr")
    logger.addHandler(sink)
    try:
        assert direct_sink(logger) is sink
        logger.propagate = True
        assert direct_sink(logger) is None  # the parents' handlers want the line too
        logger.propagate = False
        extra = logging.NullHandler()
        logger.addHandler(extra)
        assert direct_sink(logger) is None  # the program's own handler
        logger.removeHandler(extra)
        sink.addFilter(lambda record: True)
        assert direct_sink(logger) is None  # a filter wants a LogRecord
        quiet = standalone_logger(logging.WARNING)
        quiet.addHandler(AccessSink("stderr"))
        assert direct_sink(quiet) is None  # INFO is off
    finally:
        sink.close()


def hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


def boom(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    raise RuntimeError("the app failed")


@pytest.mark.parametrize("app", [hello, boom], ids=["ok", "app-raises"])
def test_every_line_is_on_disk_when_the_stop_returns(
    tmp_path: Path, access_logger: logging.Logger, app: Callable[..., list[bytes]]
) -> None:
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    access_logger.handlers[:] = [sink]  # as the CLI leaves it (pytest adds its own handler)
    assert direct_sink(access_logger) is sink
    server = make_server(app, "127.0.0.1", 0, access_log_format="{path} {status}")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with requests.Session() as client:
            for i in range(50):
                client.get(f"http://127.0.0.1:{server.server_port}/{i}", timeout=5)
    finally:
        server.server_close()
        thread.join(timeout=5)
    status = "200" if app is hello else "500"
    assert path.read_text(encoding="utf-8").splitlines() == [f"/{i} {status}" for i in range(50)]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def serve_once(
    access_logger: logging.Logger, handlers: list[logging.Handler], **options: Any
) -> None:
    """Serve GET /x?q=1 (User-Agent "ua") once with ``handlers`` on wsgibridge.access,
    and stop (every line written)."""
    access_logger.handlers[:] = handlers
    server = make_server(hello, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/x?q=1"
        requests.get(url, headers={"User-Agent": "ua"}, timeout=5)
    finally:
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("template", [JSON_FORMAT, DEFAULT_FORMAT, "{status}"])
def test_a_log_record_carries_the_requests_fields_in_access(
    access_logger: logging.Logger, template: str
) -> None:
    """Through logging, each record has the JSON line's object in ``access`` (the keys
    --access-log-fields chose), whatever the line's format; LogRecord's own attributes
    are untouched."""
    collect = Collect()
    serve_once(
        access_logger,
        [collect],
        access_log_format=template,
        access_log_fields=("i:Host", "-pid", "request"),
    )
    (record,) = collect.records
    access = record.access  # type: ignore[attr-defined]
    assert tuple(access) == (*[k for k in JSON_FIELD_NAMES if k != "pid"], "i:Host", "request")
    assert access["path"] == "/x" and access["query"] == "q=1" and access["status"] == 200
    assert access["user_agent"] == "ua" and access["request"] == "GET /x?q=1 HTTP/1.1"
    assert access["i:Host"].startswith("127.0.0.1:")
    assert record.process == os.getpid() and record.name == "wsgibridge.access"
    if template == JSON_FORMAT:
        assert json.loads(record.getMessage()) == access
    elif template == "{status}":
        assert record.getMessage() == "200"


def test_a_sink_with_a_formatter_of_its_own_gets_log_records(
    tmp_path: Path, access_logger: logging.Logger
) -> None:
    """A formatter set on the sink (a program's, a --log-config file's) is used: the line
    then goes through logging, not straight to the sink."""
    path = tmp_path / "access.log"
    sink = open_sink(str(path))
    access_logger.handlers[:] = [sink]
    assert direct_sink(access_logger) is sink
    sink.setFormatter(logging.Formatter("access: %(message)s"))
    assert direct_sink(access_logger) is None
    serve_once(access_logger, [sink], access_log_format="{path} {status}")
    assert path.read_text(encoding="utf-8") == "access: /x 200\n"


def test_a_programs_own_handler_gets_log_records(
    tmp_path: Path, access_logger: logging.Logger
) -> None:
    """A handler the program adds beside the sink: every line arrives as a LogRecord, to
    both."""
    path = tmp_path / "access.log"
    collect = Collect()
    access_logger.handlers[:] = [open_sink(str(path)), collect]
    server = make_server(hello, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        requests.get(f"http://127.0.0.1:{server.server_port}/x", timeout=5)
    finally:
        server.server_close()
        thread.join(timeout=5)
    (record,) = collect.records
    line = record.getMessage()
    assert line.startswith("127.0.0.1 - - [") and '"GET /x HTTP/1.1" 200 2 ' in line
    assert path.read_text(encoding="utf-8") == f"{line}\n"


class Renamed(WSGIRequestHandler):
    """A subclass that changes the record: the server must build one and use it."""

    def access_record(self) -> AccessRecord:
        record = super().access_record()
        record.client = "renamed"
        return record


@pytest.mark.parametrize("how", ["direct", "observed", "subclass"])
def test_the_default_line_is_the_same_whichever_way_it_is_made(
    tmp_path: Path, access_logger: logging.Logger, how: str
) -> None:
    """The default line is built straight from the request's facts when nothing else
    wants a record; with an observer, or a handler that overrides access_record(), it
    is rendered from the record - the same line either way."""
    path = tmp_path / "access.log"
    access_logger.handlers[:] = [open_sink(str(path))]
    handler = Renamed if how == "subclass" else WSGIRequestHandler
    server = make_server(hello, "127.0.0.1", 0, handler_class=handler)
    records: list[AccessRecord] = []
    if how == "observed":
        server.observers.append(records.append)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with requests.Session() as client:
            client.get(f"http://127.0.0.1:{server.server_port}/p?q=\x7f", timeout=5)
    finally:
        server.server_close()
        thread.join(timeout=5)
    (line,) = path.read_text(encoding="utf-8").splitlines()
    client_name = "renamed" if how == "subclass" else "127.0.0.1"
    pattern = (
        re.escape(client_name)
        + r' - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /p\?q=%7F HTTP/1\.1" '
        + r"200 2 \d+\.\d\dms"
    )
    assert re.fullmatch(pattern, line), line
    if how == "observed":
        (record,) = records
        assert AccessLogFormat(DEFAULT_FORMAT).render(record) == line


def test_pieces_end_at_line_ends_and_fit_one_atomic_write() -> None:
    lines = [f"{i:04d} " + "x" * 95 for i in range(100)] + ["\xe9" * 3000, "y" * 5000, "z"]
    pieces = accesssink._pieces(lines)
    assert "".join(pieces) == "".join(f"{line}\n" for line in lines)
    for piece in pieces:
        assert piece.endswith("\n")
        if piece.count("\n") > 1:  # only a line longer than the limit goes over it
            assert len(piece.encode("utf-8")) <= accesssink.ATOMIC_WRITE
    assert accesssink._pieces([]) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_workers_sharing_one_pipe_never_split_a_line() -> None:
    """--workers N processes write one pipe (journald, a container's stdout): POSIX makes
    only writes of up to PIPE_BUF bytes atomic, so batches go out in such pieces."""
    read_end, write_end = os.pipe()
    per_worker = 10000
    pids = []
    for worker in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                with open(write_end, "w", encoding="utf-8", closefd=True) as stream:
                    sink = AccessSink("stdout")
                    sink.stream = stream
                    for i in range(per_worker):
                        sink.write_line(f"worker={worker} line={i:05d} " + "x" * 80)
                    sink.close()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(write_end)
    with open(read_end, "rb") as reader:
        data = reader.read()
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    lines = data.decode().splitlines()
    assert len(lines) == 4 * per_worker
    good = re.compile(r"worker=[0-3] line=\d{5} x{80}")
    assert [line for line in lines if not good.fullmatch(line)] == []
