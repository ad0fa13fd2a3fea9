"""The servers the benchmark compares: what each one is and the command that starts it.

``SERVERS`` describes each one: the command ``run.py`` starts it with (as a
subprocess listening on 127.0.0.1:<port>, serving ``apps:<name>``), what it
needs installed and which apps it can serve.  wsgibridge, gunicorn and
granian are started through their own command lines; the rest through
``launchers.py``.
Standard library only; nothing here imports a server.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(BENCH_DIR)
LAUNCHERS_FILE = os.path.join(BENCH_DIR, "launchers.py")

# Apps a canned-bytes server can answer (Flask and the upload sink need WSGI).
CANNED_APPS = frozenset({"hello", "hello_nolen", "big", "echo"})


# ----------------------------------------------------------------------------------------
# What run.py launches


@dataclass(frozen=True)
class ServerSpec:
    """One server under test: how to start it, and what it needs."""

    name: str
    description: str
    modules: tuple[str, ...]  # importable modules it needs (checked before a run)
    distribution: str | None  # whose version is reported (None: the Python version)
    apps: frozenset[str] | None = None  # apps it can serve (None: any WSGI app)
    own_cli: bool = False  # started through its own command line (takes extra args)
    extra_args: tuple[str, ...] = field(default=())  # appended by --variant
    launcher: str = ""  # the server this row starts ("": its own name)
    access_log: bool = False  # wsgibridge: log every request to a file (else --no-access-log)
    compiled: bool = False  # wsgibridge: must be the compiled build (checked before each row)
    python: str | None = None  # another interpreter, running its own install (None: run.py's)
    skip: str = ""  # why this row cannot run here (then it is skipped, not failed)

    def access_log_path(self, workdir: str, app: str, port: int) -> str | None:
        """Where this row's access log goes (None: it has none)."""
        if not self.access_log:
            return None
        return os.path.join(workdir, f"{self.name}-{app}-{port}.access.log")

    def command(
        self, python: str, host: str, port: int, app: str, access_log: str | None = None
    ) -> list[str]:
        """The argv that serves ``apps:<app>`` on host:port (cwd: the benchmarks folder).

        ``access_log``: the file a row with ``access_log`` set logs to.
        """
        spec = f"apps:{app}"
        extra = list(self.extra_args)
        base = self.base
        if base == "wsgibridge":
            if self.access_log and not access_log:
                raise ValueError(f"{self.name} logs its requests: give it a file")
            log = ["--access-log-file", access_log] if access_log else ["--no-access-log"]
            return [
                python,
                "-m",
                "wsgibridge",
                *log,
                "--host",
                host,
                "--port",
                str(port),
                *extra,
                spec,
            ]
        if base == "granian":
            return [
                python,
                "-m",
                "granian",
                "--interface",
                "wsgi",
                "--workers",
                "1",
                "--host",
                host,
                "--port",
                str(port),
                *extra,
                spec,
            ]
        if base == "gunicorn":
            return [
                python,
                "-m",
                "gunicorn",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--bind",
                f"{host}:{port}",
                *extra,
                spec,
            ]
        return [python, LAUNCHERS_FILE, base, "--host", host, "--port", str(port), "--app", spec]

    @property
    def base(self) -> str:
        """The server this row starts (a --variant keeps its parent's)."""
        return self.launcher or self.name

    def supports(self, app: str) -> bool:
        return self.apps is None or app in self.apps

    def missing(self) -> list[str]:
        """Modules this server needs that the running Python cannot import."""
        out = []
        for module in self.modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(module)
        return out

    def version(self) -> str:
        if self.distribution is None:
            return "Python " + sys.version.split()[0]
        if self.distribution == "wsgibridge":
            try:
                return str(importlib.import_module("wsgibridge").__version__)
            except ImportError:
                return "not installed"
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "wsgibridge",
            "python -m wsgibridge, its defaults: 8 threads, 1 process, the access log on, "
            "one line per request to a file (--access-log-file)",
            ("wsgibridge",),
            "wsgibridge",
            own_cli=True,
            access_log=True,
        ),
        ServerSpec(
            "wsgibridge-compiled",
            "the wsgibridge row run by the interpreter of a compiled build: "
            "WSGIBRIDGE_COMPILE=1 pip install . in a venv, see --compiled-python",
            ("wsgibridge",),
            "wsgibridge",
            own_cli=True,
            launcher="wsgibridge",
            access_log=True,
            compiled=True,
            skip="no compiled build configured",  # until run.py configures it
        ),
        ServerSpec(
            "wsgibridge-nolog",
            "python -m wsgibridge --no-access-log, defaults otherwise",
            ("wsgibridge",),
            "wsgibridge",
            own_cli=True,
            launcher="wsgibridge",
        ),
        ServerSpec("wsgiref", "wsgiref.simple_server, log off, backlog 1024", (), None),
        ServerSpec(
            "werkzeug", "werkzeug make_server(threaded=True), log off", ("werkzeug",), "werkzeug"
        ),
        ServerSpec("waitress", "waitress.serve, defaults (4 threads)", ("waitress",), "waitress"),
        ServerSpec(
            "cheroot", "cheroot.wsgi.Server, defaults (10 threads)", ("cheroot",), "cheroot"
        ),
        ServerSpec(
            "gunicorn",
            "gunicorn -k gthread -w 1 --threads 4",
            ("gunicorn",),
            "gunicorn",
            own_cli=True,
        ),
        ServerSpec(
            "granian",
            "granian --interface wsgi --workers 1, its defaults: HTTP in Rust on 1 runtime "
            "thread, the app on blocking threads started on demand, at most 512; "
            "the native reference",
            ("granian",),
            "granian",
            own_cli=True,
        ),
        ServerSpec(
            "bhrh",
            "bare http.server BaseHTTPRequestHandler, canned bytes, no WSGI",
            (),
            None,
            apps=CANNED_APPS,
        ),
    )
}
DEFAULT_SERVERS = list(SERVERS)


def add_variant(name: str, base: str, extra_args: list[str]) -> ServerSpec:
    """Register ``name``: row ``base`` started with ``extra_args`` added to its CLI."""
    if base not in SERVERS:
        raise ValueError(f"unknown server {base!r} for variant {name!r}")
    parent = SERVERS[base]
    if not parent.own_cli:
        raise ValueError(f"{base} has no command line to add arguments to")
    if name in SERVERS:
        raise ValueError(f"a server named {name!r} already exists")
    spec = dataclasses.replace(
        parent,
        name=name,
        description=f"{parent.description} + {' '.join(extra_args)}",
        extra_args=(*parent.extra_args, *extra_args),
        launcher=parent.base,
    )
    SERVERS[name] = spec
    return spec
