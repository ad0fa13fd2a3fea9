"""The CLI's --config, WSGIBRIDGE_* variables, --check-config and --print-config."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsgibridge import Config
from wsgibridge.cli import main
from wsgibridge.config import config_fields
from wsgibridge.configfile import env_name

from .test_cli import FakeServe

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def appdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cfg_target_app.py").write_text(
        textwrap.dedent(
            """
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"ok"]
            """
        )
    )
    (tmp_path / "cfg_broken_app.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for field in config_fields():  # the caller's own settings must not leak in
        monkeypatch.delenv(env_name(field.name), raising=False)
    return tmp_path


def served(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """The Config the CLI would serve with."""
    serve = FakeServe()
    assert main(argv, serve=serve, environ=environ or {}) == 0
    ((_, config),) = serve.calls
    return config


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_the_file_reaches_the_config(appdir: Path) -> None:
    path = write(
        appdir / "app.toml",
        """
        threads = 3
        read-timeout = 2.5
        bind = ["127.0.0.1:0", "unix:/tmp/x.sock"]
        unix-socket-mode = "600"
        access_log = false
        """,
    )
    config = served(["--config", path, "cfg_target_app:app"])
    assert config == Config(
        threads=3,
        read_timeout=2.5,
        bind=("127.0.0.1:0", "unix:/tmp/x.sock"),
        unix_socket_mode=0o600,
        access_log=False,
    )


def test_access_log_fields_from_file_environment_and_command_line(appdir: Path) -> None:
    """A list in the file, commas in a variable, the option repeated or given a list."""
    expected = Config(
        access_log_format="json", access_log_fields=("i:X-Forwarded-Proto", "-referer", "request")
    )
    path = write(
        appdir / "app.toml",
        """
        access-log-format = "json"
        access-log-fields = ["i:X-Forwarded-Proto", "-referer", "request"]
        """,
    )
    assert served(["--config", path, "cfg_target_app:app"]) == expected
    environ = {
        "WSGIBRIDGE_ACCESS_LOG_FORMAT": "json",
        "WSGIBRIDGE_ACCESS_LOG_FIELDS": "i:X-Forwarded-Proto, -referer,request",
    }
    assert served(["cfg_target_app:app"], environ) == expected
    for fields in (
        ["--access-log-fields", "i:X-Forwarded-Proto,-referer,request"],
        ["--access-log-fields", "i:X-Forwarded-Proto", "--access-log-fields=-referer,request"],
    ):
        argv = ["--access-log-format", "json", *fields, "cfg_target_app:app"]
        assert served(argv) == expected


def test_request_id_header_from_file_environment_and_command_line(appdir: Path) -> None:
    expected = Config(request_id_header="X-Request-ID")
    path = write(appdir / "app.toml", 'request-id-header = "X-Request-ID"\n')
    assert served(["--config", path, "cfg_target_app:app"]) == expected
    environ = {"WSGIBRIDGE_REQUEST_ID_HEADER": "X-Request-ID"}
    assert served(["cfg_target_app:app"], environ) == expected
    argv = ["--request-id-header", "X-Request-ID", "cfg_target_app:app"]
    assert served(argv) == expected
    assert Config().request_id_header == ""  # off by default


def test_a_bad_request_id_header_is_one_line(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_err(capsys, ["--request-id-header", "X_Request_ID", "cfg_target_app:app"])
    assert line.startswith("wsgibridge: error: request_id_header 'X_Request_ID':")


def test_log_config_from_file_environment_and_command_line(appdir: Path) -> None:
    expected = Config(log_config="logging.toml")
    path = write(appdir / "app.toml", 'log-config = "logging.toml"\n')
    assert served(["--config", path, "cfg_target_app:app"]) == expected
    environ = {"WSGIBRIDGE_LOG_CONFIG": "logging.toml"}
    assert served(["cfg_target_app:app"], environ) == expected
    assert served(["--log-config", "logging.toml", "cfg_target_app:app"]) == expected


@pytest.mark.usefixtures("logging_restored")
def test_a_bad_log_config_is_refused_before_listening(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real serve(): the file is applied before anything is bound; exit 2, one line."""
    (appdir / "logging.json").write_text('{"version": 1, "handlers": {"h": {}}}')
    code = main(["--log-config", "logging.json", "--port", "0", "cfg_target_app:app"], environ={})
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("wsgibridge: error: logging.json: the log config was refused:")


def test_check_config_reads_the_log_config(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(appdir / "good.toml", "version = 1\n")
    write(appdir / "bad.toml", "version = [\n")
    argv = ["--check-config", "--log-config"]
    assert main([*argv, "good.toml", "cfg_target_app:app"], environ={}) == 0
    assert "configuration OK" in capsys.readouterr().err
    line = run_err(capsys, [*argv, "bad.toml", "cfg_target_app:app"])
    assert line.startswith("wsgibridge: error: bad.toml: not valid TOML")


@pytest.mark.usefixtures("logging_restored")
def test_with_a_log_config_the_command_line_sets_up_no_logging(appdir: Path) -> None:
    """serve() applies the file; the CLI adds no handler of its own first."""
    for name in ("wsgibridge", "wsgibridge.access"):
        logging.getLogger(name).handlers.clear()  # put back by logging_restored
    config = served(["--log-config", "logging.json", "cfg_target_app:app"])
    assert config.log_config == "logging.json"
    assert logging.getLogger("wsgibridge").handlers == []
    assert logging.getLogger("wsgibridge.access").handlers == []


def test_command_line_over_environment_over_file(appdir: Path) -> None:
    path = write(appdir / "app.toml", "threads = 2\nbacklog = 10\nworkers = 3\n")
    config = served(
        ["--config", path, "--threads", "4", "cfg_target_app:app"],
        environ={"WSGIBRIDGE_THREADS": "3", "WSGIBRIDGE_BACKLOG": "20"},
    )
    assert (config.threads, config.backlog, config.workers) == (4, 20, 3)


def test_metrics_bind_from_the_command_line_the_file_and_the_environment(appdir: Path) -> None:
    """--metrics-bind is repeatable, as --bind is; the file and WSGIBRIDGE_METRICS_BIND
    give it too, in the same precedence as every setting."""
    flags = ["--metrics-bind", "127.0.0.1:9100", "--metrics-bind", "unix:/tmp/m.sock"]
    assert served([*flags, "cfg_target_app:app"]).metrics_bind == (
        "127.0.0.1:9100",
        "unix:/tmp/m.sock",
    )
    path = write(appdir / "metrics.toml", 'metrics-bind = "[::1]:9100"\n')
    assert served(["--config", path, "cfg_target_app:app"]).metrics_bind == ("[::1]:9100",)
    environ = {"WSGIBRIDGE_METRICS_BIND": "127.0.0.1:9101, unix:/tmp/n.sock"}
    from_env = served(["--config", path, "cfg_target_app:app"], environ)
    assert from_env.metrics_bind == ("127.0.0.1:9101", "unix:/tmp/n.sock")
    assert served(["cfg_target_app:app"]).metrics_bind == ()  # off by default


def test_a_bad_metrics_bind_is_one_line(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_err(capsys, ["--metrics-bind", "localhost", "cfg_target_app:app"])
    assert "invalid bind address 'localhost': missing port (write HOST:PORT)" in line


def test_the_environment_alone(appdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``environ=``, main reads the process's environment."""
    monkeypatch.setenv("WSGIBRIDGE_PORT", "0")
    monkeypatch.setenv("WSGIBRIDGE_NO_SUCH_SETTING", "ignored")
    serve = FakeServe()
    assert main(["cfg_target_app:app"], serve=serve) == 0
    assert serve.calls[0][1] == Config(port=0)


def run_err(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str] | None = None
) -> str:
    """The one line of stderr of a CLI run that exits 2 without serving."""
    serve = FakeServe()
    assert main(argv, serve=serve, environ=environ or {}) == 2
    assert serve.calls == []
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    return line


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('threads = "8"', "key 'threads': must be an integer, not \"8\""),
        ("threadz = 8", "unknown key 'threadz' (did you mean 'threads'?)"),
        ("threads = 0", "key 'threads': threads must be at least 1, not 0"),
        ("threads = = 8", "not valid TOML: Invalid value (at line 1, column 11)"),
    ],
    ids=["type", "unknown", "value", "syntax"],
)
def test_a_bad_file_is_one_line_naming_key_and_file(
    appdir: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str
) -> None:
    path = write(appdir / "app.toml", text)
    for extra in ([], ["--check-config"], ["--print-config"]):
        line = run_err(capsys, ["--config", path, *extra, "cfg_target_app:app"])
        assert line == f"wsgibridge: error: {path}: {reason}"


def test_a_missing_file_is_one_line(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_err(capsys, ["--config", "nope.toml", "cfg_target_app:app"])
    assert line == (
        "wsgibridge: error: nope.toml: cannot read the config file: No such file or directory"
    )


def test_a_bad_variable_is_one_line_naming_it(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_err(capsys, ["cfg_target_app:app"], environ={"WSGIBRIDGE_PORT": "eighty"})
    assert line == (
        'wsgibridge: error: environment variable WSGIBRIDGE_PORT: must be an integer, not "eighty"'
    )


def test_a_bad_option_keeps_its_hint(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(appdir / "app.toml", "threads = 2\n")
    line = run_err(capsys, ["--config", path, "--threads", "0", "cfg_target_app:app"])
    assert line == "wsgibridge: error: threads must be at least 1, not 0 (see wsgibridge --help)"


def test_without_a_toml_parser_config_is_refused_clearly(
    appdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = write(appdir / "app.toml", "threads = 2\n")
    line = run_err(capsys, ["--config", path, "cfg_target_app:app"])
    assert line.startswith(
        f"wsgibridge: error: {path}: reading a TOML config file needs Python 3.11 or later"
    )
    # The options and the environment still work without it.
    assert served(["cfg_target_app:app"], environ={"WSGIBRIDGE_THREADS": "2"}).threads == 2


# -- --check-config ---------------------------------------------------------------------


def test_check_config_imports_the_app_and_does_not_serve(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(appdir / "app.toml", 'bind = ["127.0.0.1:0"]\n')
    serve = FakeServe()
    assert main(["--config", path, "--check-config", "cfg_target_app:app"], serve=serve) == 0
    assert serve.calls == []
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "wsgibridge: configuration OK: cfg_target_app:app imported, would listen on 127.0.0.1:0"
    ]


def test_check_config_refuses_an_app_that_fails_to_import(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check-config", "cfg_broken_app:app"], serve=FakeServe(), environ={}) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "wsgibridge: error: importing 'cfg_broken_app' failed: RuntimeError: broken at import"
    )
    assert lines[-1] == "RuntimeError: broken at import"


def test_check_config_loads_the_tls_files(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(appdir / "app.toml", 'certfile = "/nonexistent/cert.pem"\n')
    line = run_err(capsys, ["--config", path, "--check-config", "cfg_target_app:app"])
    assert line == (
        "wsgibridge: error: cannot read the certfile '/nonexistent/cert.pem': No such file or"
        " directory"
    )


def test_check_config_needs_the_app(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--check-config"], ["--check-config", "--print-config"]):
        with pytest.raises(SystemExit) as exited:
            main(argv, serve=FakeServe(), environ={})
        assert exited.value.code == 2
        assert "the following arguments are required: app" in capsys.readouterr().err


# -- --print-config ---------------------------------------------------------------------


def printed(capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str]) -> str:
    serve = FakeServe()
    assert main([*argv, "--print-config"], serve=serve, environ=environ) == 0
    assert serve.calls == []
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_print_config_reads_back_to_the_same_config(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What --print-config prints, --config reads back: the same Config is served."""
    path = write(appdir / "app.toml", 'access-log-format = "{client} \\"{request}\\" {status}"\n')
    argv = [
        "--config",
        path,
        "--bind",
        "unix:/tmp/a b.sock",
        "--bind",
        "[::1]:0",
        "--unix-socket-mode",
        "600",
        "--read-timeout",
        "0.5",
        "--no-access-log",
        "--url-prefix",
        "/caf\u00e9",
    ]
    environ = {"WSGIBRIDGE_THREADS": "3", "WSGIBRIDGE_LINT": "yes"}
    text = printed(capsys, argv, environ)  # no app needed
    expected = served([*argv, "cfg_target_app:app"], environ)
    assert expected.threads == 3 and expected.lint is True  # the environment was used
    assert "threads = 3  # from environment variable WSGIBRIDGE_THREADS\n" in text
    again = write(appdir / "printed.toml", text)
    assert served(["--config", again, "cfg_target_app:app"]) == expected
    # Printed again from that file: the same settings, now all from the file.
    reprinted = printed(capsys, ["--config", again], {})
    assert without_origins(reprinted) == without_origins(text)
    assert f"threads = 3  # from {again} (threads)" in reprinted


def without_origins(text: str) -> str:
    return re.sub(r"  # from .*$", "", text, flags=re.MULTILINE)


def test_print_config_of_the_defaults(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = printed(capsys, [], {})
    keys = re.findall(r"^(\w+) = ", text, flags=re.MULTILINE)
    defaults = Config()
    assert keys == [f.name for f in config_fields() if getattr(defaults, f.name) is not None]
    assert "# from" not in text  # nothing but defaults
    assert served(["--config", write(appdir / "d.toml", text), "cfg_target_app:app"]) == defaults


def test_print_and_check_together(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-config", "--check-config", "cfg_target_app:app"], environ={}) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# wsgibridge settings")
    assert captured.err.startswith("wsgibridge: configuration OK")
    assert main(["--print-config", "--check-config", "cfg_broken_app:app"], environ={}) == 2
    assert capsys.readouterr().out == ""  # nothing printed for a config that does not work


# -- the real command -------------------------------------------------------------------


def test_the_command_checks_a_config_file(appdir: Path) -> None:
    """``python -m wsgibridge --config F --check-config``: exit 0, or 2 and the one line."""
    good = write(appdir / "good.toml", "threads = 2\n")
    bad = write(appdir / "bad.toml", 'threads = 2\nworkers = "two"\n')
    fields = {env_name(field.name) for field in config_fields()}
    environ = {name: value for name, value in os.environ.items() if name not in fields}
    environ["WSGIBRIDGE_BACKLOG"] = "7"

    def wsgibridge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsgibridge", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=appdir,
            env=environ,
        )

    ok = wsgibridge("--config", good, "--check-config", "cfg_target_app:app")
    assert (ok.returncode, ok.stdout) == (0, ""), ok.stderr
    refused = wsgibridge("--config", bad, "--check-config", "cfg_target_app:app")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"wsgibridge: error: {bad}: key 'workers': must be an integer, not \"two\""
    ]
    shown = wsgibridge("--config", good, "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert "backlog = 7  # from environment variable WSGIBRIDGE_BACKLOG" in shown.stdout
    assert f"threads = 2  # from {good} (threads)" in shown.stdout


# -- the README -------------------------------------------------------------------------


def test_the_readme_config_example_is_read_as_it_says(
    appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's TOML example loads, and its environment line overrides it as told."""
    blocks = re.findall(r"^```toml\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
    (block,) = [block for block in blocks if "threads =" in block]  # not --log-config's
    path = write(appdir / "wsgibridge.toml", block)
    config = served(["--config", path, "cfg_target_app:app"])
    assert config.bind and config.threads != Config().threads
    override = served(
        ["--config", path, "--threads", "2", "cfg_target_app:app"], {"WSGIBRIDGE_THREADS": "9"}
    )
    assert override.threads == 2
    from_env = served(["--config", path, "cfg_target_app:app"], {"WSGIBRIDGE_THREADS": "9"})
    assert from_env.threads == 9


def test_static_from_the_command_line_the_file_and_the_environment(appdir: Path) -> None:
    """--static is repeatable; the file gives it as a table, WSGIBRIDGE_STATIC as a list."""
    argv = ["--static", "/static=staticfiles", "--static", "/media/=up", "cfg_target_app:app"]
    config = served([*argv, "--static-cache-control", "no-cache"])
    assert config.static == (("/static", "staticfiles"), ("/media", "up"))
    assert config.static_cache_control == "no-cache"
    path = write(appdir / "static.toml", 'static = {"/static" = "staticfiles"}\n')
    assert served(["--config", path, "cfg_target_app:app"]).static == (("/static", "staticfiles"),)
    environ = {"WSGIBRIDGE_STATIC": "/s=a,/t=b"}
    from_env = served(["--config", path, "cfg_target_app:app"], environ)
    assert from_env.static == (("/s", "a"), ("/t", "b"))


def test_a_bad_static_option_is_one_line(appdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_err(capsys, ["--static", "staticfiles", "cfg_target_app:app"])
    assert "static: 'staticfiles' is not URL_PREFIX=DIRECTORY" in line


def test_a_missing_static_directory_stops_the_start_with_exit_2(appdir: Path) -> None:
    """The real serve(): the directory is looked for before anything listens (after --chdir)."""
    (appdir / "sub").mkdir()
    (appdir / "sub" / "here").mkdir()
    env = {**os.environ, "PYTHONPATH": str(appdir)}
    command = [sys.executable, "-m", "wsgibridge", "--port", "0", "cfg_target_app:app"]
    done = subprocess.run(
        [*command, "--chdir", "sub", "--static", "/static=missing"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=appdir,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "wsgibridge: error: static: the directory 'missing' of /static" in lines[0]
    assert str(appdir / "sub" / "missing") in lines[0]  # relative to --chdir
