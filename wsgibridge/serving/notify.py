"""systemd's service notification protocol (``sd_notify(3)``), in the standard library.

Rule: a :class:`Notifier` sends one datagram per call to the socket named by
``NOTIFY_SOCKET`` and never raises into the server: without the variable it
does nothing, and a failed send is logged once at debug level and dropped
(systemd not listening must never stop a server).  Only the process
systemd watches talks to it: ``serve()`` in one process, the arbiter with
``--workers``.

What the server says, as ``sd_notify(3)`` documents the fields:

* ``READY=1`` (with ``STATUS=``) once every socket listens and the app is
  imported: a ``Type=notify`` unit is started from then on.
* ``STOPPING=1`` (with ``STATUS=``) when the stop begins (the first signal,
  before any ``--shutdown-delay``).
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` microseconds, when systemd asks
  for it (``WatchdogSec=``) and ``WATCHDOG_PID`` is unset or names this
  process.  The server sends them from its reactor thread's timer, so a
  wedged reactor stops them and systemd restarts the service.

``NOTIFY_SOCKET`` is a path of an ``AF_UNIX`` datagram socket, or, when it
starts with ``@``, a name in Linux's abstract namespace (the ``@`` stands for
the leading NUL byte).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("wsgibridge.server")


class Notifier:
    """Messages to systemd, or nothing when ``NOTIFY_SOCKET`` is not set."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if name.startswith("@"):
            self.address = b"\0" + name[1:].encode()  # the abstract namespace
        elif name.startswith("/"):
            self.address = name
        self.watchdog_interval = _watchdog_interval(env) if self.address else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``NAME=value`` lines; False if it could not be sent (never raises)."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a full queue drops the message, never waits
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.debug("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def status(self, status: str) -> bool:
        return self.send(_status(status))

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", _status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def _status(text: str) -> str:
    # One line: a newline would start another field.
    return "STATUS=" + " ".join(text.split())


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC`` (``sd_watchdog_enabled(3)``).

    None when no watchdog is asked for, or ``WATCHDOG_PID`` names another
    process (a child that inherited the variables).
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 2_000_000
