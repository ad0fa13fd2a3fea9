"""One typed, frozen configuration object for the server, the handler and the CLI.

Rule: every tunable lives here, once, with its default, its unit and its help
text.  The command line is generated from these fields (``cli.py``), so the
Python API and the CLI accept the same names and nothing has to be kept in sync
by hand.  Constructing a ``Config`` has no side effects: it only validates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .parser import Limits

# Unit constants so that defaults read as what they mean.
BYTES = 1
KiB = 1024 * BYTES
MiB = 1024 * KiB
SECONDS = 1.0

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _opt(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: the CLI help text plus optional argparse extras."""
    return {"help": help, **extra}


@dataclass(frozen=True, kw_only=True)
class Config:
    """Tunable parameters of a wsgibridge server (all keyword-only)."""

    host: str = field(
        default="127.0.0.1",
        metadata=_opt("Interface to listen on (an IPv6 address may be given bare or in [])."),
    )
    port: int = field(default=8000, metadata=_opt("TCP port; 0 picks a free port."))
    threads: int = field(
        default=8,
        metadata=_opt(
            "Most connections served at once; further clients wait in the listen backlog."
        ),
    )
    backlog: int = field(default=1024, metadata=_opt("Listen backlog passed to listen()."))
    url_prefix: str = field(
        default="",
        metadata=_opt("SCRIPT_NAME the application is mounted under, e.g. /app."),
    )
    timeout: float = field(
        default=30 * SECONDS,
        metadata=_opt("Seconds a read or a write may block while a request is in progress."),
    )
    keepalive_timeout: float = field(
        default=15 * SECONDS,
        metadata=_opt("Seconds an idle keep-alive connection is kept open."),
    )
    graceful_timeout: float = field(
        default=10 * SECONDS,
        metadata=_opt("Seconds in-flight requests may take to finish when the server stops."),
    )
    max_request_line: int = field(
        default=8 * KiB,
        metadata=_opt("Longest request line in bytes, CRLF included; longer gets 414."),
    )
    max_header_count: int = field(
        default=100,
        metadata=_opt("Most header (or trailer) fields in a request; more gets 431."),
    )
    max_header_bytes: int = field(
        default=64 * KiB,
        metadata=_opt("Largest header (or trailer) section in bytes; larger gets 431."),
    )
    max_body_size: int = field(
        default=0,
        metadata=_opt(
            "Largest request body in bytes (0: no limit); larger gets 413, before reading"
            " when Content-Length says so, mid-stream for chunked bodies."
        ),
    )
    allow_bare_lf: bool = field(
        default=False,
        metadata=_opt(
            "Accept a bare LF as a line ending in request heads (RFC 9112 §2.2 MAY);"
            " refused by default because a proxy in front may disagree."
        ),
    )
    max_drain_bytes: int = field(
        default=1 * MiB,
        metadata=_opt(
            "Unread request body bytes read and discarded after a response to keep the"
            " connection alive; a larger remainder closes the connection instead."
        ),
    )
    expose_tracebacks: bool = field(
        default=False,
        metadata=_opt("Put the traceback in the body of 500 responses (development only)."),
    )
    access_log: bool = field(
        default=True, metadata=_opt("Log one line per request to the wsgibridge.access logger.")
    )
    log_level: str = field(
        default="info",
        metadata=_opt("Level of the wsgibridge loggers when run from the CLI.", choices=LOG_LEVELS),
    )

    def __post_init__(self) -> None:
        host = self.host
        if host.startswith("[") and host.endswith("]"):
            object.__setattr__(self, "host", host[1:-1])
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")
        if self.backlog < 1:
            raise ValueError(f"backlog must be at least 1, not {self.backlog}")
        for name in ("timeout", "keepalive_timeout", "graceful_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        for name in ("max_request_line", "max_header_count", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_body_size < 0:
            raise ValueError("max_body_size must not be negative (0 means no limit)")
        if self.max_drain_bytes < 0:
            raise ValueError("max_drain_bytes must not be negative")
        prefix = self.url_prefix
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"url_prefix must start with '/' and not end with '/', not {prefix!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def limits(self) -> Limits:
        """The parser's limits from this configuration."""
        return Limits(
            max_request_line=self.max_request_line,
            max_header_count=self.max_header_count,
            max_header_bytes=self.max_header_bytes,
            allow_bare_lf=self.allow_bare_lf,
        )

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of :class:`Config`, in declaration order (used to build the CLI)."""
    return dataclasses.fields(Config)
