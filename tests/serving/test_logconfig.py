"""``--log-config``: a dictConfig file (JSON or TOML) read, checked and applied.

Real files under ``tmp_path``; logging's global state is put back after each
test (``logging_restored``).  The command line's part is in
``tests/test_cli_config.py``, a real server process with a file in
``tests/test_serving_processes.py``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from wsgibridge import make_server
from wsgibridge.errors import ConfigError
from wsgibridge.serving.accesssink import AccessSink, direct_sink
from wsgibridge.serving.logconfig import apply_log_config, read_log_config

from ..conftest import serving

pytestmark = pytest.mark.usefixtures("logging_restored")


def access_config(target: Path, formatter: bool = False) -> dict[str, Any]:
    """A dictConfig: access lines to an AccessSink on ``target``, the rest to stderr."""
    access: dict[str, Any] = {
        "class": "wsgibridge.serving.accesssink.AccessSink",
        "target": str(target),
    }
    if formatter:
        access["formatter"] = "tagged"
    return {
        "version": 1,
        "formatters": {"tagged": {"format": "tagged %(message)s"}},
        "handlers": {
            "access": access,
            "err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "wsgibridge": {"level": "INFO", "handlers": ["err"], "propagate": False},
            "wsgibridge.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


TOML_CONFIG = """\
version = 1

[formatters.tagged]
format = "tagged %(message)s"

[handlers.access]
class = "wsgibridge.serving.accesssink.AccessSink"
target = "{target}"
formatter = "tagged"

[loggers."wsgibridge.access"]
level = "INFO"
handlers = ["access"]
propagate = false
"""


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def get_once(**options: Any) -> None:
    """Serve one GET /x and stop (every access line written)."""
    server = make_server(hello, "127.0.0.1", 0, **options)
    with serving(server):
        assert requests.get(f"{server.url}x", timeout=5).status_code == 200


def test_a_json_file_configures_the_loggers_and_keeps_the_fast_path(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(access_config(log)), encoding="utf-8")
    other = logging.getLogger("test.logconfig.existing")
    apply_log_config(str(path))
    sink = direct_sink(logging.getLogger("wsgibridge.access"))
    assert isinstance(sink, AccessSink) and sink.path == str(log)
    assert not other.disabled  # loggers that existed stay enabled unless the file says so
    get_once(access_log_format="json")
    (line,) = log.read_text(encoding="ascii").splitlines()
    assert json.loads(line)["path"] == "/x"


def test_a_toml_file_with_a_formatter_gets_log_records(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    path = tmp_path / "logging.toml"
    path.write_text(TOML_CONFIG.format(target=log), encoding="utf-8")
    apply_log_config(str(path))
    assert direct_sink(logging.getLogger("wsgibridge.access")) is None  # its own formatter
    get_once(access_log_format="{path} {status}")
    assert log.read_text(encoding="utf-8") == "tagged /x 200\n"


def test_the_file_may_disable_existing_loggers(tmp_path: Path) -> None:
    path = tmp_path / "logging.json"
    path.write_text('{"version": 1, "disable_existing_loggers": true}', encoding="utf-8")
    other = logging.getLogger("test.logconfig.disabled")
    apply_log_config(str(path))
    assert other.disabled


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.json", None, "cannot read the log config file: No such file or directory"),
        ("bad.json", '{"version": 1,', "not valid JSON: Expecting property name"),
        ("bad.toml", "version = = 1", "not valid TOML: Invalid value"),
        ("list.json", "[1, 2]", "holds an object"),
        ("noversion.toml", "[loggers]", "needs version = 1"),
        ("binary.json", b"\xff\xfe", "not UTF-8 text (byte 0)"),
        ("log.yaml", "version: 1", "is .json or .toml"),
    ],
)
def test_a_file_that_cannot_be_read_names_itself(
    tmp_path: Path, name: str, text: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: .*") as caught:
        apply_log_config(str(path))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}},
            "Unable to configure handler 'h'",
        ),
        (
            {"version": 1, "loggers": {"x": {"level": "LOUD"}}},
            "Unable to configure logger 'x'",
        ),
        ({"version": 2}, "needs version = 1"),
    ],
)
def test_a_file_dictconfig_refuses_names_itself(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: ") as caught:
        apply_log_config(str(path))
    assert message in str(caught.value)


README = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_readme_example_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's --log-config block, its access log moved under tmp_path: errors on
    stderr in its format, JSON lines in its file, straight from the sink."""
    blocks = re.findall(r"^```toml\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
    (block,) = [block for block in blocks if "[loggers" in block]
    log = tmp_path / "access.jsonl"
    path = tmp_path / "logging.toml"
    path.write_text(block.replace("/var/log/app/access.jsonl", str(log)), encoding="utf-8")
    apply_log_config(str(path))
    assert isinstance(direct_sink(logging.getLogger("wsgibridge.access")), AccessSink)
    get_once(access_log_format="json")
    (line,) = log.read_text(encoding="ascii").splitlines()
    assert json.loads(line)["path"] == "/x"
    logging.getLogger("wsgibridge.error").warning("a warning")
    assert re.search(r" WARNING wsgibridge\.error: a warning$", capsys.readouterr().err, re.M)


def test_read_checks_without_applying(tmp_path: Path) -> None:
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(access_config(tmp_path / "never.log")), encoding="utf-8")
    assert read_log_config(str(path))["version"] == 1
    assert not (tmp_path / "never.log").exists()
