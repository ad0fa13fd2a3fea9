"""The access log's sink: lines kept in memory and written in batches of whole lines.

Rule: the thread that served a request pays for appending its line to a
queue and nothing more.  A batch (in writes of whole lines, at most
:data:`ATOMIC_WRITE` bytes each) is written by the sink's flusher thread once
it holds :data:`BATCH_LINES`, or :data:`FLUSH_INTERVAL` seconds after its first
line, whichever comes first; by :meth:`AccessSink.flush` (the server calls it
when it stops, ``logging.shutdown()`` at exit, and :func:`flush_all` runs
before every ``fork()``); and by the request's own thread only when the
flusher has fallen :data:`MAX_PENDING_LINES` behind (a slow disk slows the
requests instead of filling the memory).

The sink is a ``logging.Handler``, so a line logged through the
``wsgibridge.access`` logger still arrives (batched too).  The server writes
to it directly, without a ``logging.LogRecord``, only while it is that
logger's one handler; a program that adds its own handler gets the
``logging`` path with everything ``logging`` does (:func:`direct_sink`).

A file is opened once, appended to, created ``0o640`` (less if the umask
says so), and reopened when it was moved or removed, checked before each
batch (logrotate without ``copytruncate``).  Lines wait in memory for at most
:data:`FLUSH_INTERVAL` seconds: a graceful stop, an app that raises, or an
exit of the interpreter loses none; only a process killed outright (SIGKILL,
``os._exit``) loses those not yet written.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import weakref
from typing import TextIO

BATCH_LINES = 512
"""A batch of this many lines is written at once, without waiting for the timer."""

FLUSH_INTERVAL = 0.2
"""Seconds a line may wait in memory before it is written."""

MAX_PENDING_LINES = 8192
"""When this many lines wait unwritten, the request's thread writes the batch itself."""

ATOMIC_WRITE = 4096
"""Bytes per write at most (POSIX's smallest ``PIPE_BUF``): lines from several processes
sharing one pipe never mix."""

LOG_FILE_MODE = 0o640

_IDLE_WAIT = 5.0  # the flusher's bounded wait while no line comes

_sinks: weakref.WeakSet[AccessSink] = weakref.WeakSet()


class AccessSink(logging.Handler):
    """Access lines to ``stderr``, ``stdout`` (also ``-``) or a file path, written in batches.

    Its formatter is ``"%(message)s"`` (another one, set by a program or a
    ``--log-config`` file, is used for each line, through ``logging``).  Closing
    it writes what waits and closes a file, never a standard stream.
    """

    def __init__(self, target: str = "stderr") -> None:
        if not target:
            raise ValueError("the access log target is empty (use stderr, stdout or a file path)")
        super().__init__()
        self.plain = logging.Formatter("%(message)s")
        self.setFormatter(self.plain)
        self.target = target
        #: The file's path, or None for a standard stream.
        self.path: str | None = None
        self.stream: TextIO
        self._identity: tuple[int, int] | None = None
        if target == "stderr":
            self.stream = sys.stderr
        elif target in ("stdout", "-"):
            self.stream = sys.stdout
        else:
            self.path = os.path.abspath(target)
            self.stream = self._open()  # at once: a bad path fails at startup
        self._reset()
        _sinks.add(self)

    def _reset(self) -> None:
        """Fresh locks and no thread (in ``__init__`` and in a forked child)."""
        # deque.append and popleft are atomic: writers take no lock.
        self._queue: collections.deque[str] = collections.deque()
        # The flusher is awake for the lines in the queue (a writer that sees
        # False sets it and wakes the flusher; the flusher clears it before it
        # looks at the queue, so a line is never left without a wake-up).
        self._armed = False
        self._write_lock = threading.Lock()  # one batch at a time, in order
        self._start_lock = threading.Lock()  # one flusher thread
        self._wake = threading.Event()  # a batch began, or the sink is closing
        self._full = threading.Event()  # a batch reached BATCH_LINES, or closing
        self._flusher: threading.Thread | None = None
        self._closed = False
        self._failed = False

    # -- writing ----------------------------------------------------------------------------

    def write_line(self, line: str) -> None:
        """Add one line (no newline) to the batch; cheap, never blocks on I/O while the
        flusher keeps up."""
        queue = self._queue
        queue.append(line)
        if not self._armed:
            self._armed = True
            if self._flusher is None:
                self._start_flusher()
            self._wake.set()
        pending = len(queue)
        if pending >= MAX_PENDING_LINES:
            self.flush()
        elif pending == BATCH_LINES:  # once per batch (a racy miss waits for the timer)
            self._full.set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every line that waits, now, in the order the lines came."""
        with self._write_lock:
            queue = self._queue
            popleft = queue.popleft
            lines = [popleft() for _ in range(len(queue))]  # later ones wait their turn
            if not lines:
                return
            try:
                if self.path is not None:
                    self._reopen_if_moved()
                stream = self.stream
                for piece in _pieces(lines):
                    stream.write(piece)
                    stream.flush()  # one write(2) per piece
            except (OSError, ValueError) as exc:  # ValueError: a closed stream
                self._report(exc, len(lines))

    def _report(self, exc: Exception, count: int) -> None:
        if self._failed:
            return
        self._failed = True  # once: a full disk would otherwise say it 5 times a second
        try:
            print(
                f"wsgibridge: cannot write {count} access log line(s) to {self.target}: {exc}",
                file=sys.__stderr__,
            )
        except (OSError, ValueError, AttributeError):
            pass

    # -- the flusher ------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        with self._start_lock:
            if self._flusher is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="wsgibridge-access-log", daemon=True)
            self._flusher = thread
            thread.start()

    def _run(self) -> None:
        queue = self._queue
        while not self._closed:
            self._armed = False  # before looking at the queue (see _reset)
            if not queue:
                self._wake.wait(_IDLE_WAIT)
            self._wake.clear()
            if not queue:
                continue
            self._full.wait(FLUSH_INTERVAL)  # a batch gathers; a full one or close() ends it
            self._full.clear()
            self.flush()

    # -- files ------------------------------------------------------------------------------

    def _open(self) -> TextIO:
        assert self.path is not None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        try:
            st = os.fstat(fd)
            self._identity = (st.st_dev, st.st_ino)
            return open(fd, "a", encoding="utf-8", errors="backslashreplace")
        except BaseException:
            os.close(fd)
            raise

    def _reopen_if_moved(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                return
        except FileNotFoundError:
            pass
        old, self.stream = self.stream, self._open()
        old.close()

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Write what waits, stop the flusher (bounded), close a file."""
        self._closed = True
        self._wake.set()
        self._full.set()
        thread = self._flusher
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self.flush()
        if self.path is not None:
            with self._write_lock:
                try:
                    self.stream.close()
                except OSError:
                    pass
        _sinks.discard(self)
        super().close()

    def _after_fork(self) -> None:
        self._reset()  # the parent wrote what waited; the flusher thread stayed there


def _pieces(lines: list[str]) -> list[str]:
    """The lines, each ended by a newline, joined into pieces of at most
    :data:`ATOMIC_WRITE` bytes (a longer line alone).

    POSIX makes a write of at most ``PIPE_BUF`` bytes to a pipe atomic: the
    ``--workers`` processes share the access log's pipe (a terminal, journald,
    a container runtime), and a bigger write could be cut and interleaved
    with another worker's, splitting a line.  Pieces end at line ends.
    """
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = (len(line) if line.isascii() else len(line.encode("utf-8"))) + 1
        if current and size + length > ATOMIC_WRITE:
            pieces.append("\n".join(current) + "\n")
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        pieces.append("\n".join(current) + "\n")
    return pieces


def open_sink(target: str = "stderr") -> AccessSink:
    """The access log's sink: "stderr" (default), "stdout" (or "-"), or a file path."""
    return AccessSink(target)


def direct_sink(logger: logging.Logger) -> AccessSink | None:
    """The sink the server may write ``logger``'s lines to directly, or None for ``logging``.

    Direct only while the sink is the logger's one handler, nothing filters,
    nothing propagates, the sink formats a line as its message alone, and INFO
    is enabled: then ``logging`` would do exactly what
    :meth:`AccessSink.write_line` does.
    """
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters:
        return None
    sink = handlers[0]
    if (
        type(sink) is not AccessSink
        or sink.filters
        or sink.level > logging.INFO
        or sink.formatter is not sink.plain
    ):
        return None
    return sink if logger.isEnabledFor(logging.INFO) else None


def flush_all() -> None:
    """Write every sink's waiting lines (at a stop, before a fork, before ``os._exit``)."""
    for sink in list(_sinks):
        sink.flush()


def _after_fork_in_child() -> None:
    for sink in list(_sinks):
        sink._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush_all, after_in_child=_after_fork_in_child)
