"""The CLI and the Config object it is generated from (serve is injected, no sockets)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from wsgibridge import Config
from wsgibridge.cli import AppImportError, build_parser, load_app, main
from wsgibridge.config import config_fields


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
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


class FakeServe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Config]] = []

    def __call__(self, app: Any, *, config: Config) -> None:
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
        ("no_such_module_abc:app", "cannot import module 'no_such_module_abc'"),
        ("cli_target_app:missing", "has no attribute 'missing'"),
        ("cli_target_app:not_callable", "is not callable"),
        ("cli_broken_app:app", "broken at import"),
        ("cli_missing_dep:app", "no_such_module_xyz"),
        ("cli_target_app:create_app(os.getcwd())", "literals"),
        (":app", "no module"),
    ],
)
def test_bad_app_is_one_line_and_exit_2(
    appdir: Path, spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AppImportError):
        load_app(spec)
    assert main([spec], serve=FakeServe()) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("wsgibridge: error: ")


def test_invalid_option_value_exits_2(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--threads", "0", "cli_target_app:app"], serve=FakeServe()) == 2
    assert "threads must be at least 1" in capsys.readouterr().err


def test_listen_failure_exits_1(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def failing(app: Any, *, config: Config) -> None:
        raise OSError(98, "Address already in use")

    assert main(["cli_target_app:app"], serve=failing) == 1
    assert "Address already in use" in capsys.readouterr().err


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
        "wsgibridge: error: cannot import module 'nonexistent_module_q': not found"
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
        {"url_scheme": "ftp"},
        {"url_prefix": "app"},
        {"url_prefix": "/app/"},
        {"log_level": "loud"},
        {"max_drain_bytes": -1},
    ],
)
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs)


def test_config_is_frozen_and_replace_validates() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    assert config.replace(port=9).port == 9
    with pytest.raises(ValueError):
        config.replace(port=-1)
    assert Config(host="[::1]").host == "::1"
