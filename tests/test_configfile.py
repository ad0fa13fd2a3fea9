"""Settings from a TOML file and the environment, layered, and written back as TOML."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgibridge import Config
from wsgibridge.config import config_fields
from wsgibridge.configfile import (
    Origin,
    env_name,
    field_kind,
    from_command_line,
    from_environ,
    load,
    parse_octal,
    parse_toml,
    read_toml,
    resolve,
    to_toml,
    toml_string,
    toml_value,
)
from wsgibridge.errors import ConfigError, ConfigSourceError

PATH = "/etc/app.toml"


def toml_loads(text: str) -> dict[str, Any]:
    """The standard library's reading of ``text`` (Python 3.11+), to check what we write."""
    data: dict[str, Any] = pytest.importorskip("tomllib").loads(text)
    return data


def values(text: str) -> dict[str, Any]:
    """The field values a TOML text gives."""
    return {name: value for name, (value, _) in parse_toml(text, PATH).items()}


def refusal(text: str) -> str:
    """The one line a TOML text is refused with."""
    with pytest.raises(ConfigSourceError) as refused:
        resolve(parse_toml(text, PATH))
    assert refused.value.source == PATH
    message = str(refused.value)
    assert "\n" not in message
    return message


# -- every field has a form --------------------------------------------------------------


def test_every_field_has_a_file_and_environment_form() -> None:
    """A new Config field of a type no file can give fails here, not in a user's file."""
    bases = {field_kind(field).base for field in config_fields()}
    assert bases <= {"bool", "int", "float", "str", "tuple", "mounts"}


def test_a_field_of_another_type_is_refused_by_name() -> None:
    @dataclasses.dataclass
    class Other:
        when: dict[str, int]

    (field,) = dataclasses.fields(Other)
    with pytest.raises(TypeError, match=r"Config.when: no config-file form"):
        field_kind(field)


def test_every_field_that_can_be_none_defaults_to_none() -> None:
    """TOML has no null, so a None is written by leaving the key out: that reads back as
    the default, which is therefore None for every field that can be None."""
    defaults = Config()
    for field in config_fields():
        if field_kind(field).optional:
            assert getattr(defaults, field.name) is None, field.name


# -- the file ----------------------------------------------------------------------------


def test_keys_are_field_names_with_dashes_or_underscores() -> None:
    assert values("max-body-size = 10\nmax_header_count = 5\n") == {
        "max_body_size": 10,
        "max_header_count": 5,
    }


def test_each_type_from_toml() -> None:
    got = values(
        """
        host = "::1"
        threads = 3
        read_timeout = 2          # an integer is a float field's number too
        write_timeout = 2.5
        access_log = false
        bind = ["127.0.0.1:0", "unix:/tmp/x.sock"]
        certfile = "cert.pem"
        url_scheme = "https"
        """.replace("\n        ", "\n")
    )
    assert got == {
        "host": "::1",
        "threads": 3,
        "read_timeout": 2.0,
        "write_timeout": 2.5,
        "access_log": False,
        "bind": ("127.0.0.1:0", "unix:/tmp/x.sock"),
        "certfile": "cert.pem",
        "url_scheme": "https",
    }
    assert type(got["read_timeout"]) is float


def test_static_mounts_from_a_table_or_strings() -> None:
    mounts = (("/static", "staticfiles"), ("/media", "m"))
    table = values('static = {"/static" = "staticfiles", "/media" = "m"}')
    assert Config(**table).static == mounts
    strings = values('static = ["/static=staticfiles", "/media=m"]')
    assert Config(**strings).static == mounts
    assert Config(**values('static = "/static=staticfiles"')).static == mounts[:1]
    assert "key 'static': must be a table of strings" in refusal('static = {"/static" = 1}')
    assert "must be an array of strings" in refusal("static = 3")


def test_a_repeatable_option_takes_one_string_or_none() -> None:
    assert values('bind = "unix:/run/app.sock"') == {"bind": ("unix:/run/app.sock",)}
    assert values("bind = []") == {"bind": ()}


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("unix_socket_mode = 0o600", 0o600),
        ('unix-socket-mode = "600"', 0o600),
        ('unix_socket_mode = "0o640"', 0o640),
        ("unix_socket_mode = 384", 0o600),
    ],
)
def test_the_file_mode_is_an_integer_or_an_octal_string(text: str, mode: int) -> None:
    assert values(text) == {"unix_socket_mode": mode}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('threads = "8"', "/etc/app.toml: key 'threads': must be an integer, not \"8\""),
        ("threads = true", "key 'threads': must be an integer, not true"),
        ("threads = 8.5", "key 'threads': must be an integer, not 8.5"),
        ("access-log = 1", "key 'access-log': must be true or false, not 1"),
        ('access_log = "yes"', "key 'access_log': must be true or false, not \"yes\""),
        ('read_timeout = "2"', "key 'read_timeout': must be a number, not \"2\""),
        ("read_timeout = false", "key 'read_timeout': must be a number, not false"),
        ("host = 5", "key 'host': must be a string, not 5"),
        ("host = [1, 2]", "key 'host': must be a string, not [1, 2]"),
        ("host = {a = 1}", "key 'host': must be a string, not a table"),
        ("certfile = 1979-05-27", "key 'certfile': must be a string, not a date"),
        ("bind = [1]", "key 'bind': must be an array of strings (or one string), not [1]"),
        ("bind = [{}]", "must be an array of strings (or one string), not an array of other"),
        ('url_scheme = "ftp"', 'key \'url_scheme\': must be one of "", "http", "https", not "ftp"'),
        ('log_level = "loud"', 'key \'log_level\': must be one of "critical", "error"'),
        ('unix_socket_mode = "9"', "key 'unix_socket_mode': must be an octal number, not \"9\""),
        (
            "unix_socket_mode = 660",
            "key 'unix_socket_mode': 660 is a decimal integer in TOML; write 0o660 or \"660\"",
        ),
        (
            "unix_socket_mode = true",
            "key 'unix_socket_mode': must be an integer (or an octal string, \"660\"), not true",
        ),
    ],
)
def test_a_wrong_type_names_the_key_and_the_file(text: str, message: str) -> None:
    line = refusal(text)
    assert line.startswith(f"{PATH}: key "), line
    assert message in line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("threadz = 3", f"{PATH}: unknown key 'threadz' (did you mean 'threads'?)"),
        ("THREADS = 3", f"{PATH}: unknown key 'THREADS' (did you mean 'threads'?)"),
        ("[server]\nport = 1", f"{PATH}: unknown key 'server' (did you mean 'user'?)"),
        ("app = 'x:app'", f"{PATH}: unknown key 'app'"),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_name(text: str, line: str) -> None:
    assert refusal(text) == line


def test_a_key_given_twice_is_refused() -> None:
    assert refusal("max-body-size = 1\nmax_body_size = 2") == (
        f"{PATH}: key 'max_body_size': given twice (also as 'max-body-size')"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("threads = 0", f"{PATH}: key 'threads': threads must be at least 1, not 0"),
        ("port = 70000", f"{PATH}: key 'port': port must be between 0 and 65535, not 70000"),
        (
            'bind = ["localhost"]',
            f"{PATH}: key 'bind': invalid bind address 'localhost': missing port (write HOST:PORT)",
        ),
        (
            'metrics_bind = ["127.0.0.1"]',
            f"{PATH}: key 'metrics_bind': invalid bind address '127.0.0.1': missing port",
        ),
        ('keyfile = "key.pem"', f"{PATH}: key 'keyfile': keyfile needs certfile"),
        (
            'certfile = "c.pem"\nrequire-client-cert = true',
            f"{PATH}: key 'require-client-cert': require_client_cert needs ca_certs",
        ),
        (
            'threads = 0\nlog_level = "info"\nport = -1',
            f"{PATH}: key 'port': port must be between 0 and 65535, not -1",
        ),
    ],
)
def test_a_value_config_refuses_names_the_key_and_the_file(text: str, line: str) -> None:
    """Config's own checks (``__post_init__``), blamed on the setting they are about."""
    assert refusal(text).startswith(line)


def test_a_bad_static_mount_names_the_key_and_the_file() -> None:
    with pytest.raises(ConfigSourceError) as caught:
        resolve(parse_toml('static = ["static=dir"]', PATH))
    assert str(caught.value).startswith(f"{PATH}: key 'static': static: the prefix must")


def test_a_value_needing_another_from_a_later_layer_is_fine() -> None:
    """keyfile in the file, certfile on the command line: only the whole is checked."""
    loaded = resolve(
        parse_toml('keyfile = "key.pem"', PATH), from_command_line({"certfile": "c.pem"})
    )
    assert (loaded.config.keyfile, loaded.config.certfile) == ("key.pem", "c.pem")


def test_invalid_toml_says_where() -> None:
    with pytest.raises(ConfigSourceError) as refused:
        parse_toml("threads = 3\nport = \n", PATH)
    message = str(refused.value)
    assert message.startswith(f"{PATH}: not valid TOML: ")
    assert "line 2" in message and "\n" not in message


def test_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('threads = 4\nurl_prefix = "/caf\u00e9"\n', encoding="utf-8")
    assert {name: value for name, (value, _) in read_toml(str(path)).items()} == {
        "threads": 4,
        "url_prefix": "/caf\u00e9",
    }


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "cannot read the config file: No such file or directory"),
        (lambda path: path.mkdir(), "cannot read the config file: Is a directory"),
        (lambda path: path.write_bytes(b"host = '\xff'\n"), "not UTF-8 text (byte 8)"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_an_unreadable_file_is_one_line(tmp_path: Path, make: Any, reason: str) -> None:
    path = tmp_path / "app.toml"
    make(path)
    with pytest.raises(ConfigSourceError) as refused:
        read_toml(str(path))
    assert str(refused.value) == f"{path}: {reason}" + (
        "; a TOML file is UTF-8" if "UTF-8" in reason else ""
    )
    assert refused.value.source == str(path)


def test_without_a_toml_parser_the_refusal_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.10 has no tomllib: one line naming the need and the ways out."""
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = tmp_path / "app.toml"
    path.write_text("threads = 1\n")
    with pytest.raises(ConfigSourceError) as refused:
        read_toml(str(path))
    message = str(refused.value)
    assert message.startswith(f"{path}: reading a TOML config file needs Python 3.11 or later")
    assert "pip install tomli" in message and "WSGIBRIDGE_* environment variables" in message
    assert "\n" not in message


def test_tomli_stands_in_for_tomllib(monkeypatch: pytest.MonkeyPatch) -> None:
    tomllib = pytest.importorskip("tomllib")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the same API under its old name
    assert values("threads = 2") == {"threads": 2}


# -- the environment ---------------------------------------------------------------------


def env_values(**variables: str) -> dict[str, Any]:
    return {
        name: value
        for name, (value, _) in from_environ(
            {env_name(key): text for key, text in variables.items()}
        ).items()
    }


@pytest.mark.parametrize("word", ["1", "true", "True", "YES", "on", " On "])
def test_a_bool_variable_is_true(word: str) -> None:
    assert env_values(access_log=word) == {"access_log": True}


@pytest.mark.parametrize("word", ["0", "false", "FALSE", "no", "off"])
def test_a_bool_variable_is_false(word: str) -> None:
    assert env_values(access_log=word) == {"access_log": False}


def test_each_type_from_the_environment() -> None:
    assert env_values(
        threads="3",
        read_timeout="2.5",
        host="::1",
        bind="127.0.0.1:0, unix:/tmp/x.sock,",
        unix_socket_mode="0o600",
        certfile="c.pem",
    ) == {
        "host": "::1",
        "bind": ("127.0.0.1:0", "unix:/tmp/x.sock"),
        "unix_socket_mode": 0o600,
        "threads": 3,
        "read_timeout": 2.5,
        "certfile": "c.pem",
    }


def test_static_mounts_from_the_environment() -> None:
    got = env_values(static="/static=staticfiles, /media=m", static_cache_control="no-cache")
    assert Config(**got).static == (("/static", "staticfiles"), ("/media", "m"))
    assert got["static_cache_control"] == "no-cache"


def test_variables_that_name_no_field_are_ignored() -> None:
    """The build's and the tests' variables share the prefix; so may an app's."""
    assert from_environ({"WSGIBRIDGE_THREADZ": "x", "WSGIBRIDGE_COMPILE": "1"}) == {}
    assert from_environ({"WSGIBRIDGE_EXPECT_COMPILED": "0", "THREADS": "2"}) == {}
    assert from_environ({"wsgibridge_threads": "2"}) == {}


@pytest.mark.parametrize(
    ("variable", "text", "line"),
    [
        (
            "WSGIBRIDGE_THREADS",
            "many",
            'environment variable WSGIBRIDGE_THREADS: must be an integer, not "many"',
        ),
        (
            "WSGIBRIDGE_ACCESS_LOG",
            "maybe",
            "environment variable WSGIBRIDGE_ACCESS_LOG: must be 1/0, true/false, yes/no or"
            ' on/off, not "maybe"',
        ),
        (
            "WSGIBRIDGE_READ_TIMEOUT",
            "2s",
            'environment variable WSGIBRIDGE_READ_TIMEOUT: must be a number, not "2s"',
        ),
        (
            "WSGIBRIDGE_UNIX_SOCKET_MODE",
            "rw",
            'environment variable WSGIBRIDGE_UNIX_SOCKET_MODE: must be an octal number, not "rw"',
        ),
        (
            "WSGIBRIDGE_LOG_LEVEL",
            "loud",
            'environment variable WSGIBRIDGE_LOG_LEVEL: must be one of "critical", "error",'
            ' "warning", "info", "debug", not "loud"',
        ),
        (
            "WSGIBRIDGE_THREADS",
            "0",
            "environment variable WSGIBRIDGE_THREADS: threads must be at least 1, not 0",
        ),
        (
            "WSGIBRIDGE_FORWARDED_ALLOW_IPS",
            "10.0.0.0/33",
            "environment variable WSGIBRIDGE_FORWARDED_ALLOW_IPS: ",
        ),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(variable: str, text: str, line: str) -> None:
    with pytest.raises(ConfigSourceError) as refused:
        resolve(from_environ({variable: text}))
    assert str(refused.value).startswith(line), str(refused.value)
    assert refused.value.source == f"environment variable {variable}"
    assert isinstance(refused.value, ConfigError) and isinstance(refused.value, ValueError)


# -- layers ------------------------------------------------------------------------------


def test_command_line_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text("threads = 2\nbacklog = 10\nworkers = 3\nport = 9000\n")
    loaded = load(
        {"threads": 4},
        path=str(path),
        environ={"WSGIBRIDGE_THREADS": "3", "WSGIBRIDGE_BACKLOG": "20"},
    )
    config = loaded.config
    assert (config.threads, config.backlog, config.workers, config.port) == (4, 20, 3, 9000)
    assert config.host == Config().host  # from nowhere: the default
    assert loaded.origins["threads"] == Origin()
    assert loaded.origins["backlog"] == Origin("environment variable WSGIBRIDGE_BACKLOG")
    assert loaded.origins["workers"] == Origin(str(path), "workers")
    assert "host" not in loaded.origins


def test_a_later_layer_replaces_a_bad_value() -> None:
    """A value is checked only as it ends up: the command line may fix the file's."""
    loaded = resolve(parse_toml("threads = 0", PATH), from_command_line({"threads": 2}))
    assert loaded.config.threads == 2


def test_a_bad_command_line_value_has_no_source() -> None:
    with pytest.raises(ConfigSourceError) as refused:
        resolve(parse_toml("port = 1", PATH), from_command_line({"threads": 0}))
    assert str(refused.value) == "threads must be at least 1, not 0"
    assert refused.value.source == ""


def test_without_a_file_or_variables_the_defaults() -> None:
    loaded = load({}, path=None, environ={})
    assert loaded.config == Config() and dict(loaded.origins) == {}


# -- back to TOML ------------------------------------------------------------------------


def reread(config: Config) -> Config:
    return resolve(parse_toml(to_toml(config), PATH)).config


def test_the_defaults_read_back_the_same() -> None:
    assert reread(Config()) == Config()


def test_every_kind_of_setting_reads_back_the_same() -> None:
    config = Config(
        host="::1",
        bind=("127.0.0.1:0", "unix:/tmp/a b.sock"),
        unix_socket_mode=0o600,
        threads=3,
        header_timeout=0.25,
        read_timeout=1e-05,
        graceful_timeout=0,
        keepalive_timeout=86400.5,  # (infinity is refused by Config; floats read back below)
        certfile="c.pem",
        ca_certs="ca.pem",
        require_client_cert=True,
        access_log=False,
        access_log_format='{client} "{request}" \\ {status}\t{i:User-Agent}',
        url_prefix="/\u00e9t\u00e9",
        url_scheme="https",
        log_level="debug",
        static=(("/static", 'a "quoted" dir'), ("/m", "x=y")),
        static_cache_control="",
    )
    text = to_toml(config)
    assert 'static = {"/static" = "a \\"quoted\\" dir", "/m" = "x=y"}\n' in text
    assert "unix_socket_mode = 0o600\n" in text
    assert "keyfile" not in text  # None: left out
    assert reread(config) == config


@given(st.text())
def test_any_string_reads_back_the_same(text: str) -> None:
    assert toml_loads(f"key = {toml_string(text)}") == {"key": text}


@pytest.mark.parametrize(
    "number", [0.0, -1.5, 10.0, 1e-05, 1.5e300, 5e-324, 123456789.125, float("-inf")]
)
def test_floats_read_back_the_same(number: float) -> None:
    assert toml_loads(f"key = {toml_value(number)}") == {"key": number}


def test_nan_and_other_values() -> None:
    assert toml_value(float("nan")) == "nan"
    assert toml_value(True) == "true" and toml_value(0o755, octal=True) == "0o755"
    assert toml_value(()) == "[]" and toml_value(["a", 'b"']) == '["a", "b\\""]'
    with pytest.raises(TypeError):
        toml_value({"a": 1})


def test_control_characters_are_escaped() -> None:
    assert toml_string('a"\\\n\t\x00\x7f\u0085') == '"a\\"\\\\\\n\\t\\u0000\\u007F\u0085"'


def test_a_lone_surrogate_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        toml_string("bad\udcff")


def test_the_settings_say_where_they_came_from() -> None:
    loaded = resolve(
        parse_toml("threads = 2", PATH),
        from_environ({"WSGIBRIDGE_BACKLOG": "20"}),
        from_command_line({"port": 0}),
    )
    lines = to_toml(loaded.config, loaded.origins).splitlines()
    assert "port = 0  # from the command line" in lines
    assert "backlog = 20  # from environment variable WSGIBRIDGE_BACKLOG" in lines
    assert f"threads = 2  # from {PATH} (threads)" in lines
    assert "workers = 1" in lines  # a default: no comment
    assert all(line.startswith("#") or " = " in line for line in lines)


def test_a_comment_stays_on_its_line() -> None:
    origin = Origin("/tmp/odd\nname.toml", "threads")
    text = to_toml(Config(threads=2), {"threads": origin})
    assert toml_loads(text)["threads"] == 2
    assert "# from /tmp/odd?name.toml (threads)" in text


@pytest.mark.parametrize(
    ("text", "mode"), [("660", 0o660), ("0o755", 0o755), ("0O7", 7), (" 600 ", 0o600)]
)
def test_parse_octal(text: str, mode: int) -> None:
    assert parse_octal(text) == mode


@pytest.mark.parametrize("text", ["", "0o", "8", "0x10", "-1", "6 6"])
def test_parse_octal_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an octal number"):
        parse_octal(text)
