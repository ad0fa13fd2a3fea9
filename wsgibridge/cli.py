"""The ``wsgibridge`` command: ``wsgibridge [options] module:app``.

Every option is generated from a :class:`~wsgibridge.config.Config` field, so
the command line and the Python API accept the same names; the same names are
the keys of a ``--config`` TOML file and, as ``WSGIBRIDGE_<FIELD>``, environment
variables (``configfile.py`` reads both; the options given here win over the
environment, which wins over the file).  ``--check-config`` and
``--print-config`` stop before anything listens.  This is the only module that
prints to the terminal or decides an exit code.
"""

from __future__ import annotations

import argparse
import ast
import errno
import functools
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from ._mypyc import compiled
from ._types import WSGIApp
from ._version import __version__
from .config import Config, config_fields
from .configfile import Loaded, parse_octal, to_toml
from .configfile import load as load_settings
from .errors import ConfigError, ConfigSourceError
from .serving.certificates import tls_context
from .serving.logconfig import read_log_config
from .serving.process import enter_directory
from .serving.run import configure_logging, uses_arbiter
from .serving.run import serve as default_serve

EXIT_USAGE = 2


class AppImportError(Exception):
    """The ``module:app`` argument does not name a WSGI application.

    ``details`` is what to print under the one-line message: the traceback of
    an exception raised by the app's own code while it was imported or made.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix, not the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"wsgibridge: error: {message} (see wsgibridge --help)\n")


_IMPORTLIB = os.path.dirname(importlib.__file__) + os.sep


def _app_traceback(exc: BaseException) -> str:
    """The traceback of an import failure as Python prints it, without importlib's frames."""
    trace = traceback.TracebackException.from_exception(exc)
    frames = [
        frame
        for frame in trace.stack
        if not frame.filename.startswith(("<frozen importlib", _IMPORTLIB))
        and frame.filename != __file__
    ]
    if not frames and not isinstance(exc, SyntaxError):
        return ""  # raised by the call itself: the one line says it all
    trace.stack = traceback.StackSummary.from_list(frames)
    return "".join(trace.format()).rstrip("\n")


def _describe(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _callables(module: Any) -> list[str]:
    """Names of the callables a module defines itself (candidates for the app), sorted."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or not callable(value):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            names.append(name)
    return sorted(names)


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one option per Config field."""
    parser = _Parser(
        prog="wsgibridge",
        description="Serve a WSGI application over HTTP/1.1 with the standard library.",
    )
    parser.add_argument(
        "app",
        nargs="?",
        help="the application as module:attribute, or module:factory() to call a factory"
        " (not needed with --print-config)",
    )
    # Options of the command itself, not Config fields.
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="Read settings from this TOML file: keys are the option names (with - or _)."
        " WSGIBRIDGE_<OPTION> environment variables count too; the command line wins over"
        " the environment, which wins over the file.",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="Load the settings, import the app and load the TLS files, then exit without"
        " listening: 0 if all is well, else 2 and the error.",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="Print the effective settings as TOML (which --config reads back) and exit;"
        " the app is not imported unless --check-config is given too.",
    )
    defaults = Config()
    for field in config_fields():
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{field.metadata['help']} (default: {default!r})"
        kind = _type_name(field.type)
        extra: dict[str, Any] = {}
        if "choices" in field.metadata:
            extra["choices"] = field.metadata["choices"]
        metavar = field.metadata.get("metavar", field.name.upper())
        if kind == "bool":
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif kind.startswith("tuple["):
            # A repeatable option: each use adds one item.
            parser.add_argument(
                flag,
                dest=field.name,
                action="append",
                default=None,
                metavar=metavar,
                help=help_text.replace(f"(default: {default!r})", "(repeatable)"),
            )
        else:
            converter: Callable[[str], Any]
            if field.metadata.get("octal"):
                converter = _octal
                help_text = help_text.replace(f"(default: {default!r})", f"(default: {default:o})")
            else:
                converter = {"int": int, "float": float}.get(kind.split(" |")[0], str)
            parser.add_argument(
                flag,
                dest=field.name,
                type=converter,
                default=None,
                metavar=metavar,
                help=help_text,
                **extra,
            )
    build = "compiled with mypyc" if compiled else "pure Python"
    parser.add_argument(
        "--version", action="version", version=f"wsgibridge {__version__} ({build})"
    )
    return parser


def _octal(text: str) -> int:
    """An octal number such as ``660`` or ``0o660`` (file modes)."""
    try:
        return parse_octal(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def command_line_values(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields given on the command line (an option not given is None there)."""
    values = {
        field.name: getattr(args, field.name)
        for field in config_fields()
        if getattr(args, field.name, None) is not None
    }
    for name, value in values.items():
        if isinstance(value, list):  # a repeatable option
            values[name] = tuple(value)
    return values


def config_from_args(args: argparse.Namespace) -> Config:
    """A Config from parsed arguments alone; options not given keep their defaults."""
    return Config(**command_line_values(args))


def load_app(spec: str) -> WSGIApp:
    """Import ``module:attribute`` (dotted attributes allowed) or call ``module:factory(...)``.

    Without ``:attribute``, the module's ``application`` or ``app`` is used.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppImportError(f"no module in {spec!r}; expected module:app")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            hint = ""
            if module_name.endswith(".py"):
                stem = module_name[: -len(".py")].replace(os.sep, ".")
                hint = f"; to serve {module_name}, name its module: wsgibridge {stem}:app"
            elif os.path.isdir(module_name.split(".")[0]) or os.sep in module_name:
                hint = "; give a module name (package.module:app), not a path"
            else:
                hint = " (is it in the current directory, or installed in this environment?)"
            raise AppImportError(f"cannot import module {module_name!r}: not found{hint}") from exc
        hint = f" (is {exc.name!r} installed in this environment?)" if exc.name else ""
        raise AppImportError(
            f"importing {module_name!r} failed: {_describe(exc)}{hint}", _app_traceback(exc)
        ) from exc
    except Exception as exc:
        raise AppImportError(
            f"importing {module_name!r} failed: {_describe(exc)}", _app_traceback(exc)
        ) from exc
    call: ast.Call | None = None
    if attribute.endswith(")"):
        try:
            expression = ast.parse(attribute, mode="eval").body
        except SyntaxError as exc:
            raise AppImportError(f"cannot parse {attribute!r} as a factory call") from exc
        if not isinstance(expression, ast.Call):
            raise AppImportError(f"{attribute!r} is not a factory call")
        call = expression
        attribute = ast.unparse(expression.func)
    names = attribute.split(".") if attribute else []
    if not names:
        if not hasattr(module, "application") and not hasattr(module, "app"):
            found = _callables(module)
            listed = f" (callables in it: {', '.join(found[:8])})" if found else ""
            raise AppImportError(
                f"module {module_name!r} has no 'application' or 'app'; name the WSGI"
                f" callable: wsgibridge {module_name}:NAME{listed}"
            )
        names = ["application"] if hasattr(module, "application") else ["app"]
    target: Any = module
    for name in names:
        if not name.isidentifier():
            raise AppImportError(f"{attribute!r} is not an attribute name")
        try:
            target = getattr(target, name)
        except AttributeError:
            found = _callables(module)
            listed = f" (callables in it: {', '.join(found[:8])})" if found else ""
            raise AppImportError(
                f"module {module_name!r} has no attribute {'.'.join(names)!r}{listed}"
            ) from None
    if call is not None:
        try:
            args = [ast.literal_eval(arg) for arg in call.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except ValueError as exc:
            raise AppImportError("factory arguments must be Python literals") from exc
        try:
            target = target(*args, **kwargs)
        except Exception as exc:
            raise AppImportError(
                f"calling {spec.partition(':')[2]} failed: {_describe(exc)}", _app_traceback(exc)
            ) from exc
    if not callable(target):
        hint = " (the factory returned something else)" if call is not None else ""
        raise AppImportError(
            f"{spec!r} is {type(target).__name__}, not callable, so it is not a WSGI"
            f" application{hint}"
        )
    app: WSGIApp = target
    return app


def _listen_hint(exc: OSError) -> str:
    """What to do about a socket error while listening."""
    if exc.errno == errno.EADDRINUSE:
        return " (another process listens there: stop it, or choose another --port/--bind)"
    if exc.errno == errno.EACCES:
        return " (ports below 1024 need privileges: use a higher port behind a proxy)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return " (no interface of this machine has that address)"
    return ""


def _print_import_error(exc: AppImportError) -> None:
    print(f"wsgibridge: error: {exc}", file=sys.stderr)
    if exc.details:
        print(exc.details, file=sys.stderr)


def _check_and_print(args: argparse.Namespace, loaded: Loaded) -> int:
    """``--check-config`` and ``--print-config``: everything but listening."""
    config = loaded.config
    if args.check_config:
        try:
            load_app(args.app)
        except AppImportError as exc:
            _print_import_error(exc)
            return EXIT_USAGE
        try:
            if config.certfile:
                tls_context(config)
            if config.log_config:
                read_log_config(config.log_config)  # read and checked, not applied
        except ConfigError as exc:
            print(f"wsgibridge: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.print_config:
        try:
            text = to_toml(config, loaded.origins)
        except ValueError as exc:
            print(f"wsgibridge: error: cannot print the settings: {exc}", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.write(text)
    if args.check_config:
        print(
            f"wsgibridge: configuration OK: {args.app} imported, would listen on"
            f" {', '.join(config.binds)}",
            file=sys.stderr,
        )
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    serve: Callable[..., None] = default_serve,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command line; returns the exit code (2: usage or configuration, 1: runtime).

    ``environ`` is where ``WSGIBRIDGE_*`` settings are read (default: ``os.environ``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.app is None and (args.check_config or not args.print_config):
        parser.error("the following arguments are required: app")
    try:
        loaded = load_settings(
            command_line_values(args),
            path=args.config,
            environ=os.environ if environ is None else environ,
        )
    except ConfigSourceError as exc:
        # An option's own error names the option; a file's or variable's names its source.
        hint = "" if exc.source else " (see wsgibridge --help)"
        print(f"wsgibridge: error: {exc}{hint}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config or args.print_config:
        return _check_and_print(args, loaded)
    config = loaded.config
    try:
        config = enter_directory(config)  # --chdir: the app is imported from there
    except ConfigError as exc:
        print(f"wsgibridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        app = load_app(args.app)
    except AppImportError as exc:
        _print_import_error(exc)
        return EXIT_USAGE
    if not config.log_config:  # else serve() applies the file, before it listens
        try:
            configure_logging(config.log_level, config.access_log_file)
        except (OSError, ValueError) as exc:
            print(f"wsgibridge: error: cannot open the access log: {exc}", file=sys.stderr)
            return EXIT_USAGE
    debug = config.log_level == "debug"
    # Under an arbiter, a reload imports the app anew in each new worker.
    reload_with = {"loader": functools.partial(load_app, args.app)} if uses_arbiter(config) else {}
    try:
        serve(app, config=config, **reload_with)
    except (ConfigError, ValueError) as exc:
        print(f"wsgibridge: error: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"wsgibridge: error: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1
    except OSError as exc:
        # listen.py's errors name the address already ("cannot listen on X: ...").
        text = exc.strerror if exc.errno is not None and exc.strerror else str(exc)
        if "cannot listen on" not in text:
            text = f"cannot listen on {', '.join(config.binds)}: {text}"
        print(f"wsgibridge: error: {text}{_listen_hint(exc)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1
    return 0
