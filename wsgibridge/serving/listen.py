"""Listening sockets: open, adopt or inherit them for a ``Bind``, and close them.

This module only creates (and closes) sockets: it never serves, starts a thread
or forks.  Every socket it returns is bound, listening, ``SOCK_STREAM`` and not
inheritable across ``exec`` (PEP 446); inherited sockets keep the blocking mode
they came with.

Bind specs are parsed in :mod:`~wsgibridge.serving.binds`; here a ``Bind``
becomes sockets.

Decisions:

* A host *name* is resolved when the sockets are opened, not when it is
  parsed, and a socket is opened for every address it resolves to, as nginx
  does (``localhost`` gives ``127.0.0.1`` and ``::1`` where the system has
  IPv6): ``open_bind`` turns one such ``Bind`` into several sockets,
  ``open_listener`` takes addresses only.  An address of the name that cannot
  be bound here (no IPv6 at all, say) is left out while another one binds;
  with port 0 every socket gets the port the first one got.  Addresses are
  stored in canonical form (``[0:0::1]`` becomes ``::1``) and names in lower
  case, so equal binds compare equal, and ``parse_bind(str(bind)) == bind``.
* An existing path is only ever removed when it is a socket *and* nobody
  accepts on it (``connect`` is refused).  A regular file, directory or symlink
  there is an error and is left alone; a live socket is "address in use".
  Probing a live socket makes one connection that it sees close at once.
* The Unix socket file gets ``unix_mode`` by ``chmod`` right after ``bind``
  and before ``listen``, so the umask does not matter and nobody can connect
  while the mode is still the umask's (connecting to a bound but not yet
  listening socket is refused).
* ``close_listener`` unlinks a Unix path only if this module created it, in
  this process (a forked worker closing its copy leaves the path to the
  parent), and only if the path is still the very socket file we bound (same
  device and inode), never a successor's.  Sockets from ``fd://`` and systemd
  are never unlinked.  A file that cannot be removed (a server that dropped
  root may not write the directory) is a warning, not an error: it is left
  stale, and the next start replaces it.
* ``reuse_port`` is for TCP (pre-forked workers each binding one port).  With a
  Unix bind it is a ``ValueError``: two processes cannot bind one path, share
  the inherited socket instead.  With ``fd://`` it is ignored, the socket is
  already bound and sharing an inherited fd *is* the other way to share it.
* ``backlog`` and ``unix_mode`` do not apply to ``fd://`` (the socket already
  listens; systemd sets ``Backlog=`` and ``SocketMode=`` itself).
* Failures close whatever this module opened and raise ``OSError`` (keeping the
  ``errno``, e.g. ``EADDRINUSE``) or ``ValueError``, with the address in the
  message.  A refused ``fd://`` or systemd descriptor is *not* closed: it was
  never ours.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import stat
import weakref
from dataclasses import dataclass

from .binds import Bind, parse_bind

log = logging.getLogger("wsgibridge.server")

__all__ = [
    "SD_LISTEN_FDS_START",
    "Bind",
    "close_listener",
    "created_socket_file",
    "listener_address",
    "open_bind",
    "open_listener",
    "parse_bind",
    "resolve",
    "systemd_listeners",
]

#: sd_listen_fds(3): "The first file descriptor may be found at file descriptor
#: number 3 (i.e. SD_LISTEN_FDS_START), the remaining descriptors follow at
#: 4, 5, 6, …, if any."
SD_LISTEN_FDS_START = 3

_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: How long the stale-socket probe waits for a live server's accept queue.
_PROBE_TIMEOUT = 1.0

# Port 0 on a name: how often to try again when a later address's port is taken.
_SAME_PORT_ATTEMPTS = 8


# -- opening ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Created:
    """A Unix socket file this module bound: where, which inode, by which process."""

    path: str  # absolute, so a later chdir does not matter
    device: int
    inode: int
    pid: int


# Unix socket files created by open_listener, keyed by the socket it returned.
_created: weakref.WeakKeyDictionary[socket.socket, _Created] = weakref.WeakKeyDictionary()


def open_listener(
    bind: Bind, *, backlog: int, unix_mode: int = 0o660, reuse_port: bool = False
) -> socket.socket:
    """A bound, listening socket for ``bind``.

    TCP: ``SO_REUSEADDR``; ``[::]`` is dual stack (``IPV6_V6ONLY=0``) where the OS
    allows it, other IPv6 addresses are ``IPV6_V6ONLY=1`` (IPv4-mapped ones
    excepted, which cannot bind otherwise); ``reuse_port`` sets ``SO_REUSEPORT``
    so pre-forked workers can each bind the same port.  Unix: a stale socket
    file is replaced, anything else at the path is an error; the file gets
    ``unix_mode`` before ``listen``.  ``fd``: the inherited socket, checked to
    be a listening ``SOCK_STREAM`` socket (else ``ValueError``, fd left open).
    """
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be a positive integer, not {backlog!r}")
    if bind.is_name:
        raise ValueError(f"{bind} names a host: open_bind opens a socket per address")
    if bind.kind == "tcp":
        return _open_tcp(bind, backlog, reuse_port)
    if bind.kind == "unix":
        if reuse_port:
            raise ValueError(
                f"cannot listen on {bind}: reuse_port is for TCP; to share a Unix socket"
                " between processes, inherit it"
            )
        if isinstance(unix_mode, bool) or not isinstance(unix_mode, int):
            raise ValueError(f"unix_mode must be an integer, not {unix_mode!r}")
        if not 0 <= unix_mode <= 0o7777:
            raise ValueError(f"unix_mode must be between 0 and 0o7777, not {unix_mode:#o}")
        return _open_unix(bind, backlog, unix_mode)
    return _adopt(bind.fd, str(bind))


def resolve(bind: Bind) -> list[Bind]:
    """The address binds of ``bind``: itself, or one per address its host name resolves to.

    Resolution asks the system (``getaddrinfo``: ``/etc/hosts``, then DNS), once,
    at bind time; the order is the resolver's, duplicates dropped.
    """
    if not bind.is_name:
        return [bind]
    if bind.host == "localhost" or bind.host.endswith(".localhost"):
        # RFC 6761 §6.3: "users are free to assume that IPv4 and IPv6 address
        # queries for localhost names will always resolve to the respective IP
        # loopback address" - whatever /etc/hosts says (many list only one).
        return [Bind("tcp", "127.0.0.1", bind.port), Bind("tcp", "::1", bind.port)]
    try:
        infos = socket.getaddrinfo(
            bind.host, bind.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except OSError as exc:
        raise _error(exc, f"cannot listen on {bind}: cannot resolve {bind.host!r}") from exc
    hosts: list[str] = []
    for family, _, _, _, address in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            raw, _, scope = str(address[0]).partition("%")
            host = str(ipaddress.ip_address(raw)) + (f"%{scope}" if scope else "")
            if host not in hosts:
                hosts.append(host)
    if not hosts:
        raise OSError(f"cannot listen on {bind}: {bind.host!r} has no IPv4 or IPv6 address")
    return [Bind("tcp", host, bind.port) for host in hosts]


def open_bind(
    bind: Bind, *, backlog: int, unix_mode: int = 0o660, reuse_port: bool = False
) -> list[socket.socket]:
    """The listening sockets for ``bind``: one, or one per address of a host name.

    For a name, an address that cannot be bound here (``EADDRNOTAVAIL``, or an
    address family the system lacks) is left out as long as another one binds;
    any other error, or none binding, raises.  With port 0 every socket gets the
    port the first one got (tried again, a few times, if it is taken on another
    address).
    """
    if not bind.is_name:
        return [open_listener(bind, backlog=backlog, unix_mode=unix_mode, reuse_port=reuse_port)]
    addresses = resolve(bind)
    for _attempt in range(_SAME_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        port = bind.port
        skipped: list[OSError] = []
        try:
            for address in addresses:
                try:
                    sock = open_listener(
                        Bind("tcp", address.host, port), backlog=backlog, reuse_port=reuse_port
                    )
                except OSError as exc:
                    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                        skipped.append(exc)
                        continue
                    raise
                sockets.append(sock)
                port = int(sock.getsockname()[1])
        except OSError as exc:
            for sock in sockets:
                sock.close()
            if bind.port == 0 and sockets and exc.errno == errno.EADDRINUSE:
                continue  # the port the first address got is taken on another: again
            raise
        if sockets:
            return sockets
        raise skipped[0]
    raise OSError(errno.EADDRINUSE, f"cannot listen on {bind}: no port free on every address")


def _error(exc: OSError, text: str) -> OSError:
    """``exc`` again with ``text`` (naming the address) in front, keeping its errno."""
    if exc.errno is None or isinstance(exc, socket.gaierror):
        return OSError(f"{text}: {exc}")
    return OSError(exc.errno, f"{text}: {exc.strerror}")


def _open_tcp(bind: Bind, backlog: int, reuse_port: bool) -> socket.socket:
    where = f"cannot listen on {bind}"
    address = ipaddress.ip_address(bind.host)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        # Numeric only, no DNS; this is what turns "fe80::1%eth0" into a scope id.
        info = socket.getaddrinfo(
            bind.host,
            bind.port,
            family,
            socket.SOCK_STREAM,
            0,
            socket.AI_NUMERICHOST | socket.AI_PASSIVE,
        )
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _error(exc, where) from exc
    try:
        if os.name == "posix":  # on Windows SO_REUSEADDR would let others steal the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            option = getattr(socket, "SO_REUSEPORT", None)
            if option is None:
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        if isinstance(address, ipaddress.IPv6Address):
            if address.is_unspecified or address.ipv4_mapped is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except OSError:
                    pass  # the OS forces IPv6-only (OpenBSD); "[::]" then serves IPv6 only
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(info[0][4])
        sock.listen(backlog)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise _error(exc, where) from exc
        raise
    return sock


def _open_unix(bind: Bind, backlog: int, mode: int) -> socket.socket:
    where = f"cannot listen on {bind}"
    family = getattr(socket, "AF_UNIX", None)
    if family is None:
        raise OSError(f"{where}: Unix domain sockets are not available on this system")
    path = bind.path
    absolute = os.path.abspath(path)
    _remove_stale(path, where)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _error(exc, where) from exc
    created: _Created | None = None
    try:
        # Bind the path as given: a relative one may fit sun_path where the absolute
        # one would not.
        sock.bind(path)
        info = os.lstat(path)
        created = _Created(absolute, info.st_dev, info.st_ino, os.getpid())
        # Before listen(): until then every connect() is refused, so the
        # umask-derived mode is never usable.
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException as exc:
        if created is not None:
            try:
                _unlink_if_ours(created)
            except OSError:
                pass  # report the first failure, not this one
        sock.close()
        if isinstance(exc, OSError):
            raise _error(exc, where) from exc
        raise
    _created[sock] = created
    return sock


def _remove_stale(path: str, where: str) -> None:
    """Remove ``path`` if it is a socket file nobody listens on; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _error(exc, where) from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(
            errno.EEXIST, f"{where}: the path exists and is not a socket (left untouched)"
        )
    if _is_live(path, where):
        raise OSError(
            errno.EADDRINUSE, f"{where}: address in use (a server accepts connections there)"
        )
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _error(exc, f"{where}: cannot remove the stale socket file") from exc


def _is_live(path: str, where: str) -> bool:
    """Whether some process accepts connections on the socket file at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(_PROBE_TIMEOUT)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # stale: the file outlived its server (or just vanished)
    except (BlockingIOError, TimeoutError):
        return True  # a full accept queue: someone listens
    except OSError as exc:
        raise _error(exc, f"{where}: cannot tell whether the existing socket is in use") from exc
    finally:
        probe.close()
    return True


def _adopt(fd: int, where: str) -> socket.socket:
    """A socket object owning ``fd``, which must be a listening stream socket.

    On refusal the descriptor is detached, not closed: it belongs to whoever
    passed it.
    """
    try:
        sock = socket.socket(fileno=fd)  # family, type and protocol read from the fd
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise ValueError(f"{where} is not a socket") from None
        raise _error(exc, f"cannot use {where}") from exc
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{where} is not a stream socket (SOCK_STREAM): {sock.type!r}")
        if not _is_listening(sock):
            raise ValueError(f"{where} is not listening (listen() was never called on it)")
        os.set_inheritable(fd, False)
    except BaseException:
        sock.detach()
        raise
    return sock


def _is_listening(sock: socket.socket) -> bool:
    option = getattr(socket, "SO_ACCEPTCONN", None)
    if option is None:
        return True  # cannot tell on this system; accept() will
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return True


# -- systemd ---------------------------------------------------------------------------


def systemd_listeners() -> list[socket.socket]:
    """The sockets passed by systemd socket activation, in unit-file order; [] if none.

    Does what ``sd_listen_fds(unset_environment=1)`` does, as sd_listen_fds(3) describes it:

    * "Internally, sd_listen_fds() checks whether the $LISTEN_PID environment
      variable equals the daemon PID. If not, it returns immediately.
      Otherwise, it parses the number passed in the $LISTEN_FDS environment
      variable, then sets the FD_CLOEXEC flag for the parsed number of file
      descriptors starting from SD_LISTEN_FDS_START."
    * "If the unset_environment parameter is non-zero, sd_listen_fds() will
      unset the $LISTEN_FDS, $LISTEN_PID and $LISTEN_FDNAMES environment
      variables before returning (regardless of whether the function call
      itself succeeded or not)." -- so the variables are removed even when
      ``LISTEN_PID`` names another process, and child processes never see them.
    * "[W]hether a socket is a datagram or stream socket matters a lot for the
      most common program logics and should be checked." -- each descriptor must
      be a listening ``SOCK_STREAM`` socket (``Accept=yes`` connection sockets
      and FIFOs are refused with ``ValueError``, and left open).

    ``LISTEN_FDNAMES`` is ignored.  Malformed ``LISTEN_PID``/``LISTEN_FDS`` values
    raise ``ValueError`` (sd_listen_fds returns ``-EINVAL``).  The sockets are
    never unlinked by :func:`close_listener`.
    """
    pid_text = os.environ.get("LISTEN_PID")
    count_text = os.environ.get("LISTEN_FDS")
    for name in _SYSTEMD_VARIABLES:
        os.environ.pop(name, None)
    if pid_text is None:
        return []
    if _env_number("LISTEN_PID", pid_text) != os.getpid():
        return []
    if count_text is None:
        return []
    count = _env_number("LISTEN_FDS", count_text, allow_zero=True)
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    for fd in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise _error(exc, f"LISTEN_FDS={count}, but fd {fd} is unusable") from exc
    sockets: list[socket.socket] = []
    try:
        for fd in fds:
            sockets.append(_adopt(fd, f"fd://{fd} (from systemd LISTEN_FDS)"))
    except BaseException:
        for sock in sockets:
            sock.detach()
        raise
    return sockets


def _env_number(name: str, text: str, *, allow_zero: bool = False) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ValueError(f"{name}={text!r} is not a decimal number")
    value = int(text)
    if value == 0 and not allow_zero:
        raise ValueError(f"{name}=0 is not a process id")
    return value


# -- describing and closing ------------------------------------------------------------


def listener_address(sock: socket.socket) -> str:
    """The bound address for logs and URLs: ``127.0.0.1:8000``, ``[::1]:8000``, ``unix:/p``."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == getattr(socket, "AF_UNIX", None):
        if isinstance(name, bytes):  # Linux abstract namespace: a leading NUL byte
            return "unix:@" + name[1:].decode("utf-8", "backslashreplace")
        return f"unix:{name}"
    return f"{sock.family!s}:{name}"


def created_socket_file(sock: socket.socket) -> str | None:
    """The path of the Unix socket file this process created for ``sock``, else None."""
    created = _created.get(sock)
    return created.path if created is not None and created.pid == os.getpid() else None


def close_listener(sock: socket.socket) -> None:
    """Close ``sock``; if :func:`open_listener` created its Unix socket file, unlink it.

    Only this process's own files are removed, and only while the path is still
    the socket file that was bound; ``fd://`` and systemd sockets never are.
    """
    created = _created.pop(sock, None)
    try:
        if created is not None and created.pid == os.getpid():
            # Before close(): while our socket is open its inode cannot be reused, so
            # a successor's socket file can never pass for ours.
            try:
                _unlink_if_ours(created)
            except OSError as exc:
                # A stop never fails halfway over a file: a server that gave up
                # root (--user) may not write the directory.  The file is stale
                # from now on, and the next start replaces it.
                log.warning("%s (the next start replaces it)", exc.strerror or exc)
    finally:
        sock.close()


def _unlink_if_ours(created: _Created) -> None:
    try:
        info = os.lstat(created.path)
        if not stat.S_ISSOCK(info.st_mode):
            return
        if (info.st_dev, info.st_ino) != (created.device, created.inode):
            return  # someone else's socket now lives at this path
        os.unlink(created.path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _error(exc, f"cannot remove unix:{created.path}") from exc
