"""The process's identity: its working directory, its pid file, the user and group it runs as.

Rule: only the process entry points call these - ``serve()`` (``run.py``),
and the CLI for ``--chdir``, before it imports the app; a server made with
``make_server`` or ``serve_in_thread`` never changes its process.  What can
be wrong is found before anything is bound (:func:`before_binding`: the
user and group looked up, the pid file checked), so a mistake exits with
one line and no socket ever listens; the changes come after binding
(:func:`after_binding`), so root can bind port 80 and the app runs as
``nobody``, and before any worker is forked, so every process has them.

* ``chdir``: before the app is imported (gunicorn's ``--chdir``), so the
  app's module and its relative paths are found from there.
* ``pid_file``: the pid of the process that serves (with ``--workers``, the
  arbiter), written after binding through a temporary file renamed over it
  (a reader never sees half a number); removed at exit if it still names
  us.  A file naming a running process (another server) refuses the start;
  a stale one, from a dead process or from ourselves (a container's pid 1
  after a restart), is replaced.  It is written before the privileges are
  dropped, so it may live in a directory only root can write; removing it
  at exit then fails and is logged, and the next start replaces it.
* ``user``/``group`` (names or numbers), only when started as root:
  supplementary groups first (the user's own, as ``su`` and systemd's
  ``User=`` give them: ``initgroups``; none when only a group or a bare
  uid is named), then ``setgid``, then ``setuid`` (the other order would
  leave no right to change the group).  Unix socket files the server
  created are given to that user and group first, so ``--unix-socket-mode
  660`` means what it says for the group.  Without root, asking for
  another user or group is an error; asking for the current ones is not.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError
from .listen import created_socket_file

log = logging.getLogger("wsgibridge.server")


# -- the working directory -------------------------------------------------------------------


def enter_directory(config: Config) -> Config:
    """Change to ``config.chdir`` (if set); ``config`` with that directory made absolute.

    Calling it again with the returned config changes nothing (the CLI
    changes directory before importing the app, ``serve()`` once more).
    """
    if not config.chdir:
        return config
    try:
        os.chdir(config.chdir)
    except OSError as exc:
        raise ConfigError(f"cannot change to the directory {config.chdir!r}: {_why(exc)}") from exc
    return config.replace(chdir=os.getcwd())


# -- the user and group ----------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who the process becomes after binding: None leaves the uid or gid as it is."""

    uid: int | None
    gid: int | None
    user_name: str | None = None  # for initgroups, when the user database knows the uid


def resolve_identity(
    user: str | None, group: str | None, euid: int | None = None, egid: int | None = None
) -> Identity | None:
    """The uid and gid for ``--user``/``--group`` (names or numbers); None: nothing to change.

    ``euid``/``egid`` default to the process's.  A user without a group gets
    the user's primary group.  Raises :class:`ConfigError` for an unknown
    name, and when a process that is not root asks to become someone else.
    """
    import grp  # Unix only: imported when asked for
    import pwd

    if not user and not group:
        return None
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    uid: int | None = None
    gid: int | None = None
    name: str | None = None
    primary: int | None = None
    if user:
        number = _number(user)
        try:
            entry = pwd.getpwnam(user) if number is None else pwd.getpwuid(number)
        except KeyError:
            if number is None:
                raise ConfigError(f"user {user!r} does not exist (--user)") from None
            uid = number  # a bare uid is allowed, without an entry
        else:
            uid, name, primary = entry.pw_uid, entry.pw_name, entry.pw_gid
    if group:
        gid = _number(group)
        if gid is None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(f"group {group!r} does not exist (--group)") from None
    elif uid is not None:
        if primary is None:
            raise ConfigError(f"uid {uid} has no entry in the user database: name a --group too")
        gid = primary
    if euid != 0:
        if (uid is None or uid == euid) and (gid is None or gid == egid):
            return None  # already who was asked for
        who = " and ".join([f"user {user!r}"] * bool(user) + [f"group {group!r}"] * bool(group))
        raise ConfigError(f"cannot run as {who}: that needs starting as root (uid is {euid})")
    return Identity(uid, gid, name)


def drop_privileges(identity: Identity, listeners: Iterable[socket.socket] = ()) -> None:
    """Become ``identity``: socket files handed over, then groups, gid, uid (root only)."""
    uid = -1 if identity.uid is None else identity.uid
    gid = -1 if identity.gid is None else identity.gid
    try:
        for listener in listeners:
            path = created_socket_file(listener)
            if path is not None:
                os.chown(path, uid, gid)
        if identity.gid is not None:
            if identity.user_name is not None:
                os.initgroups(identity.user_name, identity.gid)
            else:
                os.setgroups([])
            os.setgid(identity.gid)
        if identity.uid is not None:
            os.setuid(identity.uid)
    except OSError as exc:
        raise ConfigError(
            f"cannot run as uid {identity.uid}, gid {identity.gid}: {_why(exc)}"
        ) from exc
    log.info("running as uid %d, gid %d", os.getuid(), os.getgid())


# -- the pid file ----------------------------------------------------------------------------


def read_pid(text: str) -> int | None:
    """The pid a pid file's text names (one decimal number, blanks around it), or None."""
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recorded_pid(path: str) -> int | None:
    try:
        # Bytes: no codec to import (after dropping root, the standard library's
        # directory may not be readable any more).
        with open(path, "rb") as file:
            return read_pid(file.read(64).decode("ascii", "replace"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the pid file {path!r}: {_why(exc)}") from exc


def check_pid_file(path: str) -> None:
    """Refuse to start (a RuntimeError) while ``path`` names another running process."""
    pid = _recorded_pid(path)
    if pid is not None and pid != os.getpid() and pid_running(pid):
        raise RuntimeError(
            f"the pid file {path} names process {pid}, which is running: another server?"
            " (stop it, or remove the file if that process is not one)"
        )


def write_pid_file(path: str) -> None:
    """Write our pid to ``path`` atomically: a temporary file beside it, renamed over it."""
    check_pid_file(path)  # again: the state may have changed while we were binding
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        try:
            os.unlink(temporary)  # left by a process with our pid that died here
        except FileNotFoundError:
            pass
        # O_EXCL: never through a symlink someone left at the temporary name.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        if exc.errno != errno.EEXIST:  # else not ours to remove
            try:
                os.unlink(temporary)
            except OSError:
                pass
        raise ConfigError(f"cannot write the pid file {path!r}: {_why(exc)}") from exc


def remove_pid_file(path: str | None) -> None:
    """Remove ``path`` if it still names this process (a successor's file is left alone)."""
    if not path:
        return
    try:
        if _recorded_pid(path) != os.getpid():
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning(
            "cannot remove the pid file %s: %s (the next start replaces it)", path, _why(exc)
        )
    except ConfigError as exc:  # unreadable
        log.warning("%s (the next start replaces it)", exc)


# -- around binding --------------------------------------------------------------------------


def before_binding(config: Config) -> Identity | None:
    """Check what can be checked before a socket is bound; the identity to take after."""
    identity = resolve_identity(config.user, config.group)
    if config.pid_file:
        check_pid_file(config.pid_file)
    return identity


def after_binding(
    config: Config, identity: Identity | None, listeners: Iterable[socket.socket]
) -> None:
    """The pid file written, then the privileges dropped; on failure the file is removed."""
    if config.pid_file:
        write_pid_file(config.pid_file)
    if identity is None:
        return
    try:
        drop_privileges(identity, listeners)
    except BaseException:
        remove_pid_file(config.pid_file)
        raise


def _number(text: str) -> int | None:
    """A uid or gid written as a decimal number, else None (a name)."""
    return int(text) if text.isascii() and text.isdigit() else None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
