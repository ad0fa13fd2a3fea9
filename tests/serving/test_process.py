"""The process's identity, its pure parts: pid file text, user and group look-ups, --chdir.

The real thing (a server process that drops to ``nobody``, writes and
removes its pid file) is in ``tests/test_process_options.py``.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from wsgibridge import Config, ConfigError
from wsgibridge.serving.process import (
    Identity,
    check_pid_file,
    enter_directory,
    read_pid,
    remove_pid_file,
    resolve_identity,
    write_pid_file,
)


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait(10)
    return child.pid


@pytest.mark.parametrize(
    ("text", "pid"),
    [
        ("123\n", 123),
        ("  42  ", 42),
        ("", None),
        ("0\n", None),
        ("-5", None),
        ("12a", None),
        ("١٢", None),
    ],
)
def test_read_pid(text: str, pid: int | None) -> None:
    assert read_pid(text) == pid


def test_a_running_process_in_the_pid_file_refuses_the_start(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getppid()}\n")  # our parent: running, and not us
    with pytest.raises(RuntimeError, match=rf"names process {os.getppid()}, which is running"):
        check_pid_file(str(path))
    assert path.read_text() == f"{os.getppid()}\n"  # left as it was


def test_a_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{dead_pid()}\n")
    write_pid_file(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pid"]  # no temporary left


def test_our_own_pid_in_the_file_is_stale_too(tmp_path: Path) -> None:
    """A container's server is pid 1 after every restart: its old file names itself."""
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getpid()}\n")
    check_pid_file(str(path))
    write_pid_file(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_a_pid_file_that_cannot_be_written_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot write the pid file .*: No such file"):
        write_pid_file(str(tmp_path / "missing" / "app.pid"))


def test_the_pid_file_is_removed_only_while_it_names_us(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("999999999\n")  # a successor's
    remove_pid_file(str(path))
    assert path.exists()
    write_pid_file(str(path))
    remove_pid_file(str(path))
    assert not path.exists()
    remove_pid_file(str(path))  # gone already: nothing to do
    remove_pid_file(None)


def test_users_and_groups_by_name_and_by_number() -> None:
    entry = nobody()
    expected = Identity(entry.pw_uid, entry.pw_gid, entry.pw_name)
    assert resolve_identity("nobody", None, euid=0) == expected
    assert resolve_identity(str(entry.pw_uid), None, euid=0) == expected
    assert resolve_identity("nobody", "0", euid=0) == Identity(entry.pw_uid, 0, "nobody")
    assert resolve_identity(None, "0", euid=0) == Identity(None, 0)
    assert resolve_identity(None, None, euid=0) is None


def test_a_bare_uid_without_an_entry_needs_a_group() -> None:
    unknown = "4000000001"
    with pytest.raises(ConfigError, match=r"uid 4000000001 has no entry.*--group"):
        resolve_identity(unknown, None, euid=0)
    assert resolve_identity(unknown, "4000000002", euid=0) == Identity(4000000001, 4000000002)


def test_unknown_names_are_one_config_error() -> None:
    with pytest.raises(ConfigError, match=r"user 'no-such-user-x' does not exist \(--user\)"):
        resolve_identity("no-such-user-x", None, euid=0)
    with pytest.raises(ConfigError, match=r"group 'no-such-group-x' does not exist"):
        resolve_identity(None, "no-such-group-x", euid=0)


def test_without_root_only_the_current_user_and_group_may_be_asked_for() -> None:
    entry = nobody()
    with pytest.raises(
        ConfigError, match=r"cannot run as user 'nobody': that needs starting as root"
    ):
        resolve_identity("nobody", None, euid=1000, egid=1000)
    with pytest.raises(ConfigError, match="user 'nobody' and group '0'"):
        resolve_identity("nobody", "0", euid=entry.pw_uid, egid=entry.pw_gid)
    assert resolve_identity("nobody", None, euid=entry.pw_uid, egid=entry.pw_gid) is None


def test_chdir_is_made_absolute_so_a_second_change_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site").mkdir()
    monkeypatch.chdir(tmp_path)
    config = enter_directory(Config(chdir="site"))
    assert config.chdir == str(tmp_path / "site")
    assert os.getcwd() == str(tmp_path / "site")
    assert enter_directory(config) == config  # from there, the same place again
    assert os.getcwd() == str(tmp_path / "site")
    assert enter_directory(Config()) == Config()


def test_a_missing_directory_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot change to the directory .*No such file"):
        enter_directory(Config(chdir=str(tmp_path / "missing")))


@pytest.mark.parametrize("name", ["pid_file", "user", "group", "chdir"])
def test_empty_process_settings_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must not be empty"):
        Config(**{name: ""})  # type: ignore[arg-type]
