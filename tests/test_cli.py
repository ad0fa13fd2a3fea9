"""The CLI and the Config object it is generated from (serve is injected, no sockets)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme

from wsgibridge import Config
from wsgibridge.cli import AppImportError, build_parser, load_app, main
from wsgibridge.config import config_fields

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group


@pytest.fixture
def appdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_target_app.py").write_text(
        textwrap.dedent(
            """
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"ok"]

            class Holder:
                inner = app

            def create_app(name="default", debug=False):
                def made(environ, start_response):
                    start_response("200 OK", [])
                    return [name.encode()]
                made.debug = debug
                return made

            application = app
            not_callable = 42
            """
        )
    )
    (tmp_path / "cli_broken_app.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "cli_missing_dep.py").write_text("import no_such_module_xyz\n")
    (tmp_path / "cli_syntax_app.py").write_text("def app(:\n")
    (tmp_path / "cli_file_app.py").write_text("open('/nonexistent/settings.ini')\n")
    (tmp_path / "cli_no_app.py").write_text("VERSION = 1\n")
    # A missing dependency whose name is a prefix of the app module's own name.
    (tmp_path / "cli_prefixed.py").write_text("import cli\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


class FakeServe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Config]] = []

    def __call__(self, app: Any, *, config: Config, loader: Any = None) -> None:
        # loader: how the arbiter imports the app anew (only when it runs one).
        self.calls.append((app, config))


def test_every_config_field_is_an_option() -> None:
    """The CLI is generated from Config: one option per field, nothing to keep in sync."""
    help_text = build_parser().format_help()
    for field in config_fields():
        assert "--" + field.name.replace("_", "-") in help_text


def test_options_reach_the_config(appdir: Path) -> None:
    serve = FakeServe()
    code = main(
        [
            "--host",
            "::1",
            "--port",
            "0",
            "--threads",
            "3",
            "--read-timeout",
            "2.5",
            "--bind",
            "127.0.0.1:0",
            "--bind",
            "unix:/tmp/x.sock",
            "--unix-socket-mode",
            "600",
            "--no-access-log",
            "--expose-tracebacks",
            "--url-prefix",
            "/app",
            "cli_target_app:app",
        ],
        serve=serve,
    )
    assert code == 0
    ((_, config),) = serve.calls
    assert config.host == "::1" and config.port == 0 and config.threads == 3
    assert config.read_timeout == 2.5 and config.access_log is False
    assert config.bind == ("127.0.0.1:0", "unix:/tmp/x.sock")
    assert config.unix_socket_mode == 0o600
    assert config.expose_tracebacks is True and config.url_prefix == "/app"


def test_defaults_when_no_options(appdir: Path) -> None:
    serve = FakeServe()
    assert main(["cli_target_app:app"], serve=serve) == 0
    assert serve.calls[0][1] == Config()


@pytest.mark.parametrize(
    ("spec", "check"),
    [
        ("cli_target_app:app", lambda a: a.__name__ == "app"),
        ("cli_target_app:Holder.inner", lambda a: a.__name__ == "app"),
        ("cli_target_app", lambda a: a.__name__ == "app"),
        ("cli_target_app:create_app()", lambda a: a.debug is False),
        ("cli_target_app:create_app('x', debug=True)", lambda a: a.debug is True),
    ],
)
def test_load_app_forms(appdir: Path, spec: str, check: Any) -> None:
    assert check(load_app(spec))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "no_such_module_abc:app",
            "cannot import module 'no_such_module_abc': not found (is it in the current"
            " directory, or installed in this environment?)",
        ),
        (
            "cli_target_app:missing",
            "module 'cli_target_app' has no attribute 'missing' (callables in it: Holder,"
            " app, application, create_app)",
        ),
        ("cli_target_app:not_callable", "'cli_target_app:not_callable' is int, not callable"),
        ("cli_no_app", "has no 'application' or 'app'; name the WSGI callable: wsgibridge"),
        ("cli_no_app.py", "name its module: wsgibridge cli_no_app:app"),
        ("cli_target_app:create_app(os.getcwd())", "literals"),
        (":app", "no module"),
    ],
)
def test_bad_app_is_one_line_and_exit_2(
    appdir: Path, spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spec that names no WSGI app: one line saying why and what to write instead."""
    with pytest.raises(AppImportError):
        load_app(spec)
    assert main([spec], serve=FakeServe()) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("wsgibridge: error: ")


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        (
            "cli_broken_app:app",
            "importing 'cli_broken_app' failed: RuntimeError: broken at import",
            "RuntimeError: broken at import",
        ),
        (
            "cli_missing_dep:app",
            "importing 'cli_missing_dep' failed: ModuleNotFoundError: No module named"
            " 'no_such_module_xyz' (is 'no_such_module_xyz' installed in this environment?)",
            "ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        (
            "cli_prefixed:app",
            "importing 'cli_prefixed' failed: ModuleNotFoundError: No module named 'cli'"
            " (is 'cli' installed in this environment?)",
            "ModuleNotFoundError: No module named 'cli'",
        ),
        (
            "cli_syntax_app:app",
            "importing 'cli_syntax_app' failed: SyntaxError: invalid syntax (cli_syntax_app.py,"
            " line 1)",
            "SyntaxError: invalid syntax",
        ),
        (
            "cli_file_app:app",
            "importing 'cli_file_app' failed: FileNotFoundError: [Errno 2] No such file or"
            " directory: '/nonexistent/settings.ini'",
            "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/settings.ini'",
        ),
    ],
)
def test_an_app_that_fails_to_import_gets_one_line_and_its_traceback(
    appdir: Path, spec: str, first: str, last: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app's own code raised: one line naming the cause, then the traceback as Python
    prints it, starting in the app's file (no importlib or wsgibridge frames)."""
    assert main([spec], serve=FakeServe()) == 2
    lines = capsys.readouterr().err.rstrip("\n").splitlines()
    assert lines[0] == f"wsgibridge: error: {first}"
    # A SyntaxError has no frame of its own: Python shows the file and line instead.
    at = 1 if spec.startswith("cli_syntax_app") else 2
    if at == 2:
        assert lines[1] == "Traceback (most recent call last):"
    assert lines[at].startswith(f'  File "{appdir}'), lines
    assert "importlib" not in "\n".join(lines) and "wsgibridge" not in "\n".join(lines[1:])
    assert lines[-1] == last


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0", "cli_target_app:app"], "threads must be at least 1, not 0"),
        (["--port", "abc", "cli_target_app:app"], "argument --port: invalid int value: 'abc'"),
        ([], "the following arguments are required: app"),
        (["--no-such-option", "cli_target_app:app"], "unrecognized arguments: --no-such-option"),
        (["--bind", "localhost", "cli_target_app:app"], "missing port (write HOST:PORT)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    appdir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No wall of usage before the error: one line, the problem, where to look."""
    with pytest.raises(SystemExit) as exited:
        code = main(argv, serve=FakeServe())
        raise SystemExit(code)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("wsgibridge: error: ") and line.endswith(" (see wsgibridge --help)")
    assert message in line


def test_invalid_option_value_exits_2(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--threads", "0", "cli_target_app:app"], serve=FakeServe()) == 2
    assert "threads must be at least 1" in capsys.readouterr().err


def test_listen_failure_exits_1(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def failing(app: Any, *, config: Config) -> None:
        raise OSError(98, "Address already in use")

    assert main(["cli_target_app:app"], serve=failing) == 1
    assert "Address already in use" in capsys.readouterr().err


def test_a_port_in_use_is_said_once_with_the_fix(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The address is named once (listen.py says it; the CLI does not repeat it)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "cli_target_app:app"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"wsgibridge: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (another process listens there: stop it, or choose another --port/--bind)"
    ]


@pytest.fixture
def bad_pem(tmp_path: Path) -> Path:
    path = tmp_path / "bad.pem"
    path.write_text("not a certificate\n")
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--certfile", "/nonexistent/cert.pem"],
            "cannot read the certfile '/nonexistent/cert.pem': No such file or directory",
        ),
        (["--certfile", "BAD"], "cannot load the certificate chain and key from 'BAD'"),
        (["--certfile", "BAD", "--keyfile", "BAD"], "(certfile must be a PEM certificate chain"),
        # Read by the arbiter before it forks: not once per worker, with tracebacks.
        (["--workers", "2", "--certfile", "BAD"], "'BAD' holds no valid PEM certificate"),
    ],
    ids=["missing", "not-pem", "not-pem-with-key", "not-pem-with-workers"],
)
def test_tls_file_errors_are_one_line_and_exit_2(
    appdir: Path,
    bad_pem: Path,
    options: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing certificate or one that is not PEM: the file and the fix on one line, exit
    2 (a configuration error, not "cannot listen"), before anything listens."""
    options = [str(bad_pem) if option == "BAD" else option for option in options]
    err = main_err(capsys, options)
    assert err.count("\n") == 1 and err.startswith("wsgibridge: error: "), err
    assert message.replace("'BAD'", repr(str(bad_pem))) in err


def test_a_certificate_without_its_key_is_one_line(
    appdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile = tmp_path / "cert-only.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    err = main_err(capsys, ["--certfile", str(certfile)])
    assert err.count("\n") == 1 and "cannot load the certificate chain and key" in err


def main_err(capsys: pytest.CaptureFixture[str], options: list[str]) -> str:
    """stderr of a CLI run that must fail with exit code 2."""
    assert main([*options, "--port", "0", "cli_target_app:app"]) == 2
    return capsys.readouterr().err


def test_a_failing_factory_call_is_one_line(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cli_target_app:create_app(1, 2, 3)"], serve=FakeServe()) == 2
    assert capsys.readouterr().err.splitlines() == [
        "wsgibridge: error: calling create_app(1, 2, 3) failed: TypeError: create_app() takes"
        " from 0 to 2 positional arguments but 3 were given"
    ]


def test_log_level_debug_adds_the_traceback(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = main_err(capsys, ["--certfile", "/nonexistent/cert.pem", "--log-level", "debug"])
    assert err.startswith("wsgibridge: error: cannot read the certfile")
    assert "Traceback (most recent call last):" in err


@pytest.mark.parametrize(
    "argv",
    [["-m", "wsgibridge"], ["-c", "from wsgibridge.cli import main; raise SystemExit(main())"]],
)
def test_module_entry_point_reports_import_error(argv: list[str], tmp_path: Path) -> None:
    """``python -m wsgibridge`` is the same command; a bad app exits 2 with one line."""
    proc = subprocess.run(
        [sys.executable, *argv, "nonexistent_module_q:app"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wsgibridge: error: cannot import module 'nonexistent_module_q': not found (is it in"
        " the current directory, or installed in this environment?)"
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"threads": 0},
        {"read_timeout": 0},
        {"write_timeout": -1},
        {"header_timeout": 0},
        {"keepalive_timeout": 0},
        {"graceful_timeout": -1},
        {"connection_limit": 0},
        {"workers": 0},
        {"bind": ("nowhere",)},
        {"bind": ("unix:",)},
        {"unix_socket_mode": 0o1777},
        {"keyfile": "key.pem"},
        {"ca_certs": "ca.pem"},
        {"certfile": "c.pem", "require_client_cert": True},
        {"forwarded_allow_ips": "10.0.0.0/33"},
        {"access_log_format": "{nope}"},
        {"access_log_fields": ("nope",)},
        {"access_log_fields": ("-request",)},
        {"access_log_fields": ("i:X Y",)},
        {"request_id_header": "X Request"},
        {"request_id_header": "Content-Length"},
        {"log_config": "logging.yaml"},
        {"log_config": ""},
        {"url_scheme": "ftp"},
        {"url_prefix": "app"},
        {"url_prefix": "/app/"},
        {"log_level": "loud"},
        {"max_drain_bytes": -1},
        {"static": ("static",)},  # no PREFIX=
        {"static": ("static=dir",)},  # the prefix must start with /
        {"static": ("/=dir",)},  # the whole site is the app's
        {"static": ("/static=",)},
        {"static": ("/a b=dir",)},
        {"static": ("/a%2f=dir",)},
        {"static": ("/a?b=dir",)},
        {"static": ("/s=a", "/s/=b")},  # one prefix twice
        {"static": (("/s", "a", "b"),)},
        {"static": 3},
        {"static_cache_control": "public\r\nSet-Cookie: x"},
        {"static_cache_control": "max-age=60, €"},  # not ASCII: cannot be sent
        # NaN passes "<= 0"; a NaN or infinite timeout would fail only at run time.
        {"keepalive_timeout": float("nan")},
        {"read_timeout": float("inf")},
        {"graceful_timeout": float("nan")},
        {"shutdown_delay": float("nan")},
    ],
)
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs)


def test_static_mounts_from_a_mapping_pairs_or_strings() -> None:
    """Config.static is (prefix, directory) pairs, however the API gives them."""
    make: Any = Config  # the annotation names the pairs; the others are converted
    expected = (("/static", "staticfiles"), ("/media", "up=loads"))
    assert make(static={"/static": "staticfiles", "/media/": "up=loads"}).static == expected
    assert make(static=[("/static", "staticfiles"), ["/media", "up=loads"]]).static == expected
    assert make(static=("/static=staticfiles", "/media=up=loads")).static == expected
    assert make(static="/static=staticfiles").static == expected[:1]
    assert Config().static == ()
    assert Config().static_cache_control == "public, max-age=3600"


def test_config_is_frozen_and_replace_validates() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    assert config.replace(port=9).port == 9
    with pytest.raises(ValueError):
        config.replace(port=-1)
    assert Config(host="[::1]").host == "::1"
