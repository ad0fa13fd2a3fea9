"""One typed, frozen configuration object for the server, the handler and the CLI.

Rule: every tunable lives here, once, with its default, its unit and its help
text.  The command line is generated from these fields (``cli.py``), so the
Python API and the CLI accept the same names and nothing has to be kept in sync
by hand.  Constructing a ``Config`` has no side effects: it only validates
(the bind addresses, the trusted proxies and the access-log format are parsed
here, so a mistake is reported before anything is opened; a ``log_config``
file is read only when the server starts, by ``serving/logconfig.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .accesslog import DEFAULT_FORMAT, AccessLogFormat
from .http.parser import Limits
from .http.requestid import check_header_name
from .http.trusted import TrustedProxies
from .serving.binds import parse_bind

# Unit constants so that defaults read as what they mean.
BYTES = 1
KiB = 1024 * BYTES
MiB = 1024 * KiB
SECONDS = 1.0

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEADLINE_ACTIONS = ("log", "recycle")


def _opt(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: the CLI help text plus optional argparse extras.

    Extras: ``choices``, ``metavar``, ``octal=True`` (an int written in octal).
    """
    return {"help": help, **extra}


@dataclass(frozen=True, kw_only=True)
class Config:
    """Tunable parameters of a wsgibridge server (all keyword-only)."""

    # -- where to listen ------------------------------------------------------------------
    host: str = field(
        default="127.0.0.1",
        metadata=_opt("Interface to listen on (an IPv6 address may be given bare or in [])."),
    )
    port: int = field(default=8000, metadata=_opt("TCP port; 0 picks a free port."))
    bind: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            "Address to listen on, repeatable: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N."
            " Replaces --host/--port when given.",
            metavar="ADDRESS",
        ),
    )
    unix_socket_mode: int = field(
        default=0o660,
        metadata=_opt("Permissions of the Unix socket files we create (octal).", octal=True),
    )
    backlog: int = field(default=1024, metadata=_opt("Listen backlog passed to listen()."))
    metrics_bind: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            "Serve GET /metrics (the Prometheus text format) on this address, a listener"
            " of its own, never the app's; the same syntax as --bind, repeatable. With"
            " --workers the figures are summed over all workers (default: no metrics).",
            metavar="ADDRESS",
        ),
    )
    # -- how much at once -----------------------------------------------------------------
    threads: int = field(
        default=8,
        metadata=_opt(
            "Worker threads: requests handled at once. Idle keep-alive connections wait"
            " in a selector and hold no thread."
        ),
    )
    connection_limit: int = field(
        default=4096,
        metadata=_opt(
            "Most open connections, busy and idle; beyond it new clients wait in the"
            " listen backlog."
        ),
    )
    workers: int = field(
        default=1,
        metadata=_opt(
            "Pre-forked processes serving the same sockets, each with its own threads;"
            " a dead one is replaced."
        ),
    )
    # -- recycling and reload (pre-forked workers) -------------------------------------
    max_requests: int = field(
        default=0,
        metadata=_opt(
            "Requests a worker process serves before it is replaced, the replacement"
            " accepting first (0: no limit)."
        ),
    )
    max_requests_jitter: int = field(
        default=0,
        metadata=_opt(
            "Up to this many more requests, drawn per worker, so that workers are not"
            " all replaced at once."
        ),
    )
    max_worker_memory: int = field(
        default=0,
        metadata=_opt(
            "MiB of resident memory (RSS) beyond which a worker process is replaced"
            " (0: no limit); checked every second."
        ),
    )
    reload: bool = field(
        default=False,
        metadata=_opt(
            "Development: when a file of the app's modules changes, restart the workers"
            " with the new code (a broken edit leaves the old code serving)."
        ),
    )
    reload_extra: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            "More files whose change reloads, as a glob (** allowed), with --reload.",
            metavar="GLOB",
        ),
    )
    # -- timeouts -------------------------------------------------------------------------
    header_timeout: float = field(
        default=10 * SECONDS,
        metadata=_opt(
            "Seconds a client has to send a whole request head (and a new connection its"
            " first one); a client that trickles its headers is cut off."
        ),
    )
    read_timeout: float = field(
        default=30 * SECONDS,
        metadata=_opt("Seconds one read of a request body may wait for bytes (then 408)."),
    )
    write_timeout: float = field(
        default=30 * SECONDS,
        metadata=_opt("Seconds one write may wait on a client that stopped reading."),
    )
    keepalive_timeout: float = field(
        default=75 * SECONDS,
        metadata=_opt(
            "Seconds an idle keep-alive connection is kept open; behind a load balancer,"
            " keep it longer than the balancer's idle timeout."
        ),
    )
    graceful_timeout: float = field(
        default=10 * SECONDS,
        metadata=_opt("Seconds in-flight requests may take to finish when the server stops."),
    )
    # -- readiness and drain (load balancers, Kubernetes, systemd) ------------------------
    health_path: str = field(
        default="",
        metadata=_opt(
            "Path the server answers itself, without the app: GET/HEAD get 200 while"
            " serving, 503 once stopping (for a load balancer's or Kubernetes' probe).",
            metavar="PATH",
        ),
    )
    health_access_log: bool = field(
        default=False,
        metadata=_opt("Write access log lines for requests to --health-path too."),
    )
    shutdown_delay: float = field(
        default=0 * SECONDS,
        metadata=_opt(
            "Seconds the server keeps serving after SIGTERM, --health-path answering 503,"
            " before it stops accepting (the time a load balancer needs to stop sending)."
        ),
    )
    # -- request limits -------------------------------------------------------------------
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
    # -- TLS ------------------------------------------------------------------------------
    certfile: str | None = field(
        default=None,
        metadata=_opt("PEM certificate chain: serve HTTPS (the key may be in it too)."),
    )
    keyfile: str | None = field(
        default=None, metadata=_opt("PEM private key, if not in --certfile.")
    )
    ca_certs: str | None = field(
        default=None,
        metadata=_opt(
            "PEM CA bundle: ask clients for a certificate and verify it (SSL_CLIENT_CERT"
            " in the environ)."
        ),
    )
    require_client_cert: bool = field(
        default=False,
        metadata=_opt("Refuse TLS clients without a certificate signed by --ca-certs."),
    )
    # -- behind a proxy -------------------------------------------------------------------
    forwarded_allow_ips: str = field(
        default="127.0.0.1,::1",
        metadata=_opt(
            "Peers (addresses, CIDRs, 'unix' or '*') whose X-Forwarded-* and Forwarded"
            " headers are believed; from anyone else they are removed."
        ),
    )
    proxy_protocol: bool = field(
        default=False,
        metadata=_opt(
            "Expect a PROXY protocol header (v1 or v2) first on every connection (HAProxy,"
            " AWS NLB, nginx) from a peer in --forwarded-allow-ips."
        ),
    )
    url_prefix: str = field(
        default="",
        metadata=_opt(
            "SCRIPT_NAME the application is mounted under, e.g. /app; other paths get 404."
        ),
    )
    url_scheme: str = field(
        default="",
        metadata=_opt(
            "wsgi.url_scheme when no trusted proxy says otherwise (default: https with"
            " TLS, else http).",
            choices=("", "http", "https"),
        ),
    )
    # -- static files ---------------------------------------------------------------------
    static: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=_opt(
            "Serve the files under DIRECTORY at URL_PREFIX, before the app (GET/HEAD,"
            " ETag/304, Range); any other path under the prefix gets 404, never the app."
            " A relative DIRECTORY is relative to --chdir.",
            metavar="URL_PREFIX=DIRECTORY",
        ),
    )
    static_cache_control: str = field(
        default="public, max-age=3600",
        metadata=_opt(
            "Cache-Control of every --static answer (empty: none); names with a content"
            " hash (Django's ManifestStaticFilesStorage) can take"
            " 'public, max-age=31536000, immutable'.",
            metavar="VALUE",
        ),
    )
    # -- errors and logging ---------------------------------------------------------------
    expose_tracebacks: bool = field(
        default=False,
        metadata=_opt("Put the traceback in the body of 500 responses (development only)."),
    )
    lint: bool = field(
        default=False,
        metadata=_opt(
            "Check the app against PEP 3333 as it runs and warn about each mistake, with"
            " the rule and the fix (development and tests)."
        ),
    )
    access_log: bool = field(
        default=True, metadata=_opt("Log one line per request to the wsgibridge.access logger.")
    )
    access_log_format: str = field(
        default=DEFAULT_FORMAT,
        metadata=_opt(
            "Access log line with {named} fields: client, time, request, status, bytes,"
            " duration_ms, {i:Header} ... (see the README); 'json' for one JSON object"
            " per line."
        ),
    )
    access_log_fields: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            "Keys to add to the JSON access line (and to the 'access' attribute of"
            " log records): fields such as request or remote_port, i:Header, o:Header;"
            " -name leaves a default key out. Comma-separated or repeated.",
            metavar="FIELDS",
        ),
    )
    access_log_file: str = field(
        default="stderr",
        metadata=_opt(
            "Where the CLI (and serve() without a logging setup) writes access lines:"
            " stderr, stdout or a file path."
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_opt(
            "Level of the wsgibridge loggers from the CLI (and serve() without a logging setup).",
            choices=LOG_LEVELS,
        ),
    )
    log_config: str | None = field(
        default=None,
        metadata=_opt(
            "A logging.config.dictConfig file, JSON (.json) or TOML (.toml), applied"
            " at startup instead of the CLI's own logging setup (--log-level and"
            " --access-log-file then do nothing).",
            metavar="FILE",
        ),
    )
    request_id_header: str = field(
        default="",
        metadata=_opt(
            "Give every request an id in this header (X-Request-ID is usual; off when"
            " empty): kept from a peer in --forwarded-allow-ips when well formed, else"
            " new; in the environ, the response and the access log.",
            metavar="NAME",
        ),
    )
    # -- a request that hangs, and the process --------------------------------------------
    request_deadline: float = field(
        default=0.0,
        metadata=_opt(
            "Seconds after which a request still running is logged once, at warning level,"
            " with its request line, client, time and the stack of its thread (0: off)."
            " Nothing is killed."
        ),
    )
    deadline_action: str = field(
        default="log",
        metadata=_opt(
            "What a request past --request-deadline causes: log only, or recycle its worker"
            " as --max-requests does (a new worker first; runs even one under the arbiter).",
            choices=DEADLINE_ACTIONS,
        ),
    )
    pid_file: str | None = field(
        default=None,
        metadata=_opt(
            "Write the server's process id to this file once it listens (removed at exit);"
            " refuse to start while the file names a running process.",
            metavar="PATH",
        ),
    )
    user: str | None = field(
        default=None,
        metadata=_opt(
            "Run as this user (name or uid) once the sockets are bound; needs starting as root.",
        ),
    )
    group: str | None = field(
        default=None,
        metadata=_opt(
            "Run as this group (name or gid) once the sockets are bound (default: the"
            " --user's group); needs starting as root.",
        ),
    )
    chdir: str | None = field(
        default=None,
        metadata=_opt("Change to this directory before importing the app.", metavar="DIR"),
    )

    def __post_init__(self) -> None:
        host = self.host
        if host.startswith("[") and host.endswith("]"):
            object.__setattr__(self, "host", host[1:-1])
        if not isinstance(self.bind, tuple):
            object.__setattr__(self, "bind", tuple(self.bind))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        for spec in self.binds:
            parse_bind(spec)  # raises ValueError naming the bad address
        if not isinstance(self.metrics_bind, tuple):
            object.__setattr__(self, "metrics_bind", tuple(self.metrics_bind))
        for spec in self.metrics_bind:
            parse_bind(spec)
        if not 0 <= self.unix_socket_mode <= 0o777:
            raise ValueError(f"unix_socket_mode must be 0 to 0o777, not {self.unix_socket_mode:o}")
        for name in ("threads", "backlog", "connection_limit", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not isinstance(self.reload_extra, tuple):
            object.__setattr__(self, "reload_extra", tuple(self.reload_extra))
        for name in ("max_requests", "max_requests_jitter", "max_worker_memory"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means off)")
        if self.max_requests_jitter and not self.max_requests:
            raise ValueError("max_requests_jitter needs max_requests")
        if self.reload_extra and not self.reload:
            raise ValueError("reload_extra needs reload")
        for name in (
            "header_timeout",
            "read_timeout",
            "write_timeout",
            "keepalive_timeout",
        ):
            if not 0 < getattr(self, name) < math.inf:  # NaN and infinity too
                raise ValueError(f"{name} must be a positive number of seconds")
        if not 0 <= self.graceful_timeout < math.inf:
            raise ValueError("graceful_timeout must be a number of seconds, 0 or more")
        path = self.health_path
        if path and (not path.startswith("/") or not path.isprintable() or " " in path):
            raise ValueError(f"health_path must start with '/' and have no spaces, not {path!r}")
        if not 0 <= self.shutdown_delay < math.inf:  # NaN too
            raise ValueError("shutdown_delay must be a number of seconds, 0 or more")
        for name in ("max_request_line", "max_header_count", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_body_size < 0:
            raise ValueError("max_body_size must not be negative (0 means no limit)")
        if self.max_drain_bytes < 0:
            raise ValueError("max_drain_bytes must not be negative")
        if self.keyfile and not self.certfile:
            raise ValueError("keyfile needs certfile")
        if (self.ca_certs or self.require_client_cert) and not self.certfile:
            raise ValueError("client certificates (ca_certs) need certfile")
        if self.require_client_cert and not self.ca_certs:
            raise ValueError("require_client_cert needs ca_certs to verify them with")
        TrustedProxies(self.forwarded_allow_ips)  # raises ValueError naming the bad item
        prefix = self.url_prefix
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"url_prefix must start with '/' and not end with '/', not {prefix!r}")
        object.__setattr__(self, "static", static_mounts(self.static))
        cache_control = self.static_cache_control
        if not (cache_control.isascii() and cache_control.isprintable()):
            # A field value is sent as bytes (RFC 9110 §5.5: VCHAR, SP, HTAB): ASCII here.
            raise ValueError(
                "static_cache_control must be printable ASCII (no line breaks),"
                f" not {cache_control!r}"
            )
        if self.url_scheme not in ("", "http", "https"):
            raise ValueError(f"url_scheme must be http or https, not {self.url_scheme!r}")
        # "a,b" and ("a", "b") are the same: an option given once can list them all.
        fields = self.access_log_fields
        items = tuple(
            part.strip()
            for item in ((fields,) if isinstance(fields, str) else fields)
            for part in item.split(",")
            if part.strip()
        )
        object.__setattr__(self, "access_log_fields", items)
        # Raises ValueError naming the bad field.
        AccessLogFormat(self.access_log_format, self.access_log_fields)
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 <= self.request_deadline < float("inf"):
            raise ValueError("request_deadline must be a number of seconds, 0 or more (0: off)")
        if self.deadline_action not in DEADLINE_ACTIONS:
            raise ValueError(f"deadline_action must be one of {', '.join(DEADLINE_ACTIONS)}")
        if self.deadline_action != "log" and not self.request_deadline:
            raise ValueError(f"deadline_action {self.deadline_action} needs a request_deadline")
        if self.request_id_header:
            check_header_name(self.request_id_header)
        log_config = self.log_config
        if log_config and not log_config.endswith((".json", ".toml")):
            raise ValueError(f"log_config must be a .json or .toml file, not {log_config!r}")
        for name in ("pid_file", "user", "group", "chdir", "log_config"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} must not be empty (leave it out instead)")

    @property
    def limits(self) -> Limits:
        """The parser's limits from this configuration."""
        return Limits(
            max_request_line=self.max_request_line,
            max_header_count=self.max_header_count,
            max_header_bytes=self.max_header_bytes,
            allow_bare_lf=self.allow_bare_lf,
        )

    @property
    def binds(self) -> tuple[str, ...]:
        """The addresses to listen on: ``bind``, or ``host:port`` when none is given."""
        if self.bind:
            return self.bind
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{host}:{self.port}",)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def static_mounts(value: object) -> tuple[tuple[str, str], ...]:
    """``static`` as (prefix, directory) pairs, from a mapping, pairs or ``PREFIX=DIR`` strings.

    A prefix starts with ``/``; a trailing ``/`` is dropped (``/static/`` is
    ``/static``); it is not ``/`` alone (the app would get nothing) and holds
    no ``%``, ``?``, ``#``, space or control character (it is matched against the
    request target as sent).  A prefix is given once.  The directory is not
    looked at here (a ``Config`` has no side effects): the server refuses
    one that is missing when it starts.
    """
    if isinstance(value, str):
        value = (value,)
    items = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"static must be a mapping or a sequence of PREFIX=DIR, not {value!r}")
    mounts: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            prefix, equals, directory = item.partition("=")
            if not equals:
                raise ValueError(f"static: {item!r} is not URL_PREFIX=DIRECTORY")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            prefix, directory = item
        else:
            raise ValueError(f"static: {item!r} is not a (prefix, directory) pair")
        if not isinstance(prefix, str) or not isinstance(directory, str):
            raise ValueError(f"static: {item!r} is not a pair of strings")
        prefix = prefix.strip()
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise ValueError(
                f"static: the prefix must start with '/' and not be '/', not {prefix!r}"
            )
        prefix = prefix.rstrip("/")
        if not prefix.isprintable() or any(char in prefix for char in " %?#\\"):
            raise ValueError(
                f"static: the prefix {prefix!r} must be a plain path (no %, ?, #, spaces)"
            )
        if not directory:
            raise ValueError(f"static: no directory for the prefix {prefix!r}")
        if any(prefix == seen for seen, _ in mounts):
            raise ValueError(f"static: the prefix {prefix!r} is given twice")
        mounts.append((prefix, directory))
    return tuple(mounts)


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of :class:`Config`, in declaration order (used to build the CLI)."""
    return dataclasses.fields(Config)
