"""``--static URL_PREFIX=DIRECTORY``: files the server answers itself, before the app.

Rule: the one place a request opens a file.  A target under a mount's
prefix is the server's, whatever happens to it: a file inside the directory
is sent (``socket.sendfile`` through the handler's ``send_file``, which
falls back to reads and writes for TLS), anything else is a 404 - never the
app, never a directory listing.  Which name, which status and which fields:
``http/static.py``, pure; here the file is opened and checked:

* the joined name is resolved (``realpath``) and must lie inside the mount's
  own resolved directory, so a symbolic link that leads out is a 404 (one
  that stays inside is followed: a mount may link between its own files);
* the resolved name is opened with ``O_NOFOLLOW`` (a link swapped in after
  the check is not followed) and ``O_NONBLOCK`` (a FIFO does not hang the
  open), then ``fstat``-ed: only a regular file is served; a directory, a
  device, a FIFO or a socket is a 404;
* the file is opened once per request and always closed.

The directories are resolved when the server is made, relative to the
working directory then (after ``--chdir``); a missing one is a
:class:`~wsgibridge.errors.ConfigError`.  The handler asks
:meth:`StaticFiles.match` of each request only when there are mounts: off,
``--static`` costs the handler one attribute check per request.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO, Protocol

from ..config import Config
from ..errors import ConfigError, MethodNotAllowed, NotFound
from ..http.environ import split_target
from ..http.parser import RequestHead
from ..http.static import Plan, check_method, file_name, plan, refusal
from .exchange import Exchange

OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


class Mount:
    """One ``--static`` mount: its prefix, and its directory resolved (bytes, as the OS has it)."""

    __slots__ = ("directory", "inside", "prefix", "root")

    def __init__(self, prefix: str, directory: str) -> None:
        self.prefix = prefix
        self.directory = directory
        self.root = os.path.realpath(os.fsencode(directory))
        self.inside = os.path.join(self.root, b"")  # the root and a separator
        if not os.path.isdir(self.root):
            shown = os.path.abspath(directory)
            raise ConfigError(
                f"static: the directory {directory!r} of {prefix} is not a directory"
                f" ({shown} does not exist or is not one)"
            )

    def open(self, name: bytes) -> tuple[BinaryIO, os.stat_result]:
        """The regular file ``name`` (from :func:`~wsgibridge.http.static.file_name`) under
        this mount, opened, and its status; :class:`NotFound` for anything else."""
        real = os.path.realpath(os.path.join(self.root, name))
        if not real.startswith(self.inside):
            raise NotFound("a static file's name that leads out of its directory")
        try:
            fd = os.open(real, OPEN_FLAGS)
        except OSError as exc:
            raise NotFound(f"no static file: {exc.strerror}") from None
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise NotFound("a static file's name that is not a regular file")
            file: BinaryIO = open(fd, "rb", buffering=0)  # noqa: SIM115  # closed by the caller
        except BaseException:
            os.close(fd)
            raise
        return file, status


class StaticFiles:
    """The mounts of a server, longest prefix first, and the Cache-Control of their answers."""

    def __init__(self, mounts: list[Mount], cache_control: str) -> None:
        self.mounts = sorted(mounts, key=lambda mount: len(mount.prefix), reverse=True)
        self.cache_control = cache_control

    @classmethod
    def from_config(cls, config: Config) -> StaticFiles | None:
        """The mounts of ``config.static`` (None when there are none); a ConfigError for a
        directory that is missing."""
        if not config.static:
            return None
        mounts = [Mount(prefix, directory) for prefix, directory in config.static]
        return cls(mounts, config.static_cache_control)

    def match(self, target: str) -> tuple[Mount, str] | None:
        """The mount a request target is under, and the rest of its path after the prefix's
        ``/`` (still percent-encoded, the query dropped); None: the app's."""
        if not target.startswith("/"):
            target = split_target(target)[0]  # absolute-form (RFC 9112 §3.2.2)
        for mount in self.mounts:
            prefix = mount.prefix
            if not target.startswith(prefix):
                continue
            rest = target[len(prefix) :]
            if rest == "" or rest[0] == "?":
                return mount, ""  # the directory itself: never a listing
            if rest[0] == "/":
                return mount, rest[1:].partition("?")[0]
        return None


class StaticHandler(Protocol):
    """What answering a static file needs of the handler."""

    exchange: Exchange
    close_connection: bool
    linger_on_close: bool
    server: Any
    writer_class: Any

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None: ...

    def send_file(self, file: Any, offset: int, count: int) -> int: ...

    def end_own_headers(
        self, head: RequestHead, headers: list[tuple[str, str]], close: bool = False
    ) -> None: ...

    def log_access(self) -> None: ...


def answer(
    handler: StaticHandler, head: RequestHead, files: StaticFiles, mount: Mount, rest: str
) -> None:
    """Answer a request under ``mount`` (and ``rest``: :meth:`StaticFiles.match`): the file,
    a 304/206/416/412, or a 404/405; then the access line, as for an app's response."""
    file: BinaryIO | None = None
    try:
        try:
            check_method(head.method)
            if not rest:
                raise NotFound("a static mount's directory is never listed")
            name = file_name(rest)
            file, status = mount.open(name)
            chosen = plan(
                method=head.method,
                headers=head.headers,
                name=name,
                size=status.st_size,
                mtime_ns=status.st_mtime_ns,
                cache_control=files.cache_control,
            )
        except (NotFound, MethodNotAllowed) as exc:
            chosen = refusal(exc)
        _send(handler, head, chosen, file)
    finally:
        if file is not None:
            file.close()
    handler.log_access()


def _send(handler: StaticHandler, head: RequestHead, chosen: Plan, file: BinaryIO | None) -> None:
    """The plan's head and body (the file's span by ``sendfile``), keep-alive as for the app."""
    headers = chosen.headers
    # A GET with a body is not read: the connection closes after the answer
    # (as for the health path), so what the client sent is never parsed as a request.
    handler.end_own_headers(head, headers)
    exchange = handler.exchange
    exchange.status_code = chosen.status
    exchange.error_headers = headers  # the response's fields, for the access record
    head_only = head.method == "HEAD"
    body = b"" if head_only else chosen.body
    try:
        handler.send_head(chosen.status, chosen.reason, headers, body)
        exchange.body_bytes = len(body)
        if chosen.count and not head_only and file is not None:
            sent = handler.send_file(file, chosen.offset, chosen.count)
            exchange.body_bytes += sent
            if sent != chosen.count:
                # The file shrank while it was sent: close, so that the client
                # sees the truncation (RFC 9112 §8: "A message that uses a valid
                # Content-Length is incomplete if the size of the message body
                # received (in octets) is less than the value given by Content-Length").
                handler.close_connection = True
    except OSError:
        handler.close_connection = True
