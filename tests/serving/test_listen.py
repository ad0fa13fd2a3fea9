"""Listening sockets (``wsgibridge.serving.listen``): bind specs, TCP, IPv6, Unix, fd://, systemd.

Everything runs over real sockets on 127.0.0.1 / ::1 and short Unix paths under
/tmp (sun_path holds ~107 bytes); every socket a test opens is closed by it.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wsgibridge.serving.listen import (
    Bind,
    close_listener,
    listener_address,
    open_bind,
    open_listener,
    parse_bind,
    resolve,
    systemd_listeners,
)

from ..conftest import can_bind, needs_ipv6, needs_unix
from ..importroot import IMPORT_ROOT

BACKLOG = 8


# -- fixtures and helpers --------------------------------------------------------------

Opener = Callable[..., socket.socket]


@pytest.fixture
def opened() -> Iterator[Opener]:
    """``opened(bind_or_spec, **options)`` is ``open_listener``; all are closed at teardown."""
    sockets: list[socket.socket] = []

    def opener(bind: Bind | str, **options: Any) -> socket.socket:
        options.setdefault("backlog", BACKLOG)
        sock = open_listener(parse_bind(bind) if isinstance(bind, str) else bind, **options)
        sockets.append(sock)
        return sock

    yield opener
    for sock in sockets:
        close_listener(sock)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A fresh directory with a short path, for Unix socket files."""
    path = Path(tempfile.mkdtemp(prefix="wbl-", dir="/tmp" if os.path.isdir("/tmp") else None))
    yield path
    shutil.rmtree(path)


def exchange(listener: socket.socket, address: Any) -> Any:
    """Connect to ``address``, accept on ``listener``, send a few bytes; the peer address."""
    with socket.socket(listener.family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(address)
        listener.settimeout(5)
        conn, peer = listener.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
    return peer


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


# -- parse_bind --------------------------------------------------------------------------

VALID = [
    ("127.0.0.1:8000", Bind("tcp", "127.0.0.1", 8000)),
    ("0.0.0.0:80", Bind("tcp", "0.0.0.0", 80)),
    ("127.0.0.1:0", Bind("tcp", "127.0.0.1", 0)),
    ("10.1.2.3:65535", Bind("tcp", "10.1.2.3", 65535)),
    ("[::1]:8000", Bind("tcp", "::1", 8000)),
    ("[::]:8000", Bind("tcp", "::", 8000)),
    ("[0:0:0:0:0:0:0:1]:8000", Bind("tcp", "::1", 8000)),  # canonical form
    ("[fe80::1%lo]:8000", Bind("tcp", "fe80::1%lo", 8000)),  # scoped link-local
    (":8000", Bind("tcp", "0.0.0.0", 8000)),  # every IPv4 interface
    ("8000", Bind("tcp", "127.0.0.1", 8000)),  # port only: loopback
    ("0", Bind("tcp", "127.0.0.1", 0)),
    ("localhost:8000", Bind("tcp", "localhost", 8000)),  # a name: resolved when opened
    ("LocalHost.:8000", Bind("tcp", "localhost", 8000)),  # names in canonical form
    ("web1:80", Bind("tcp", "web1", 80)),
    ("unix:/run/app.sock", Bind("unix", path="/run/app.sock")),
    ("unix:relative.sock", Bind("unix", path="relative.sock")),
    ("unix:@name", Bind("unix", path="@name")),  # a file named @name, not abstract
    ("fd://3", Bind("fd", fd=3)),
    ("fd://0", Bind("fd", fd=0)),
]

INVALID = [
    ("", "empty"),
    ("127.0.0.1", "missing port"),
    ("127.0.0.1:", "missing port"),
    (":", "missing port"),
    ("[::1]", "missing port"),
    ("[::1]:", "missing port"),
    ("127.0.0.1:65536", "out of range"),
    ("70000", "out of range"),
    ("127.0.0.1:99999999999999999999", "out of range"),
    ("127.0.0.1:-1", "not a decimal number"),
    ("127.0.0.1:+80", "not a decimal number"),
    ("127.0.0.1: 80", "not a decimal number"),
    ("127.0.0.1:８０", "not a decimal number"),  # noqa: RUF001 (fullwidth digits)
    ("127.0.0.1:http", "not a decimal number"),
    ("::1", "must be in brackets"),
    ("::1:8000", "must be in brackets"),
    ("fe80::1:8000", "must be in brackets"),
    ("[::1]8000", r"expected ':PORT' after '\]'"),
    ("[::1:8000", r"missing '\]'"),
    ("[127.0.0.1]:80", "brackets are only for IPv6"),
    ("[localhost]:80", "brackets are only for IPv6"),
    ("256.0.0.1:80", "neither an IP address nor a host name"),
    ("127.000.000.001:80", "neither an IP address nor a host name"),
    (" 127.0.0.1:80", "neither an IP address nor a host name"),
    ("[::g]:80", "neither an IP address nor a host name"),
    ("exa_mple.com:80", "neither an IP address nor a host name"),
    ("0x7f000001:80", "neither an IP address nor a host name"),  # inet_aton forms
    ("0x7f.1:80", "neither an IP address nor a host name"),
    ("-bad.example:80", "neither an IP address nor a host name"),
    ("bücher.example:80", "neither an IP address nor a host name"),
    ("unix:", "empty unix socket path"),
    ("unix://run/app.sock", "not unix://"),
    ("unix:/tmp/a\0b", "NUL"),
    ("fd://", "missing file descriptor"),
    ("fd://-1", "not a decimal number"),
    ("fd://x", "not a decimal number"),
    ("fd://3.0", "not a decimal number"),
    ("http://127.0.0.1:80", "unknown scheme"),
    ("tcp://127.0.0.1:80", "unknown scheme"),
]


@pytest.mark.parametrize(("spec", "expected"), VALID)
def test_parse_bind_valid(spec: str, expected: Bind) -> None:
    bind = parse_bind(spec)
    assert bind == expected
    assert parse_bind(str(bind)) == bind  # str() gives a spec back


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_parse_bind_invalid(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_bind(spec)
    assert str(info.value).startswith(f"invalid bind address {spec!r}: ")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Bind("tcp", "local host", 80), "neither an IP address nor a host name"),
        (lambda: Bind("tcp", port=80), "empty host"),
        (lambda: Bind("tcp", "[::1]", 80), "neither an IP address nor a host name"),
        (lambda: Bind("tcp", "127.0.0.1", 65536), "0 to 65535"),
        (lambda: Bind("tcp", "127.0.0.1", 80, path="/x"), "only its own fields"),
        (lambda: Bind("unix"), "empty unix socket path"),
        (lambda: Bind("unix", path="/x", port=1), "only its own fields"),
        (lambda: Bind("fd"), "non-negative"),
        (lambda: Bind("fd", fd=3, host="127.0.0.1"), "only its own fields"),
        (lambda: Bind("udp", "127.0.0.1", 80), "bind kind"),  # type: ignore[arg-type]
    ],
)
def test_bind_validates_itself(make: Callable[[], Bind], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bind_str() -> None:
    assert str(Bind("tcp", "127.0.0.1", 8000)) == "127.0.0.1:8000"
    assert str(Bind("tcp", "::1", 8000)) == "[::1]:8000"
    assert str(Bind("unix", path="/run/a.sock")) == "unix:/run/a.sock"
    assert str(Bind("fd", fd=3)) == "fd://3"


def test_host_names_are_names_and_addresses_are_not() -> None:
    assert parse_bind("localhost:1").is_name
    assert parse_bind("web1:1").is_name
    assert not parse_bind("127.0.0.1:1").is_name
    assert not parse_bind("[::1]:1").is_name
    assert not parse_bind("unix:/x").is_name


def test_localhost_opens_both_loopbacks_on_one_port() -> None:
    """RFC 6761 §6.3: localhost names resolve to the loopback addresses, IPv4 and IPv6,
    whatever /etc/hosts lists; with port 0 both sockets share the port the first got,
    so one URL with either address reaches the server.  Without IPv6 only 127.0.0.1."""
    sockets = open_bind(parse_bind("localhost:0"), backlog=8)
    try:
        addresses = [sock.getsockname()[:2] for sock in sockets]
        hosts = [host for host, _ in addresses]
        assert hosts == (["127.0.0.1", "::1"] if can_bind("::1") else ["127.0.0.1"])
        assert len({port for _, port in addresses}) == 1
        for host, port in addresses:
            with socket.create_connection((host, port), timeout=2):
                pass
    finally:
        for sock in sockets:
            sock.close()


def test_a_name_that_does_not_resolve_names_itself() -> None:
    with pytest.raises(OSError, match=r"cannot listen on no-such-host\.invalid:0: cannot resolve"):
        open_bind(parse_bind("no-such-host.invalid:0"), backlog=8)


def test_open_listener_wants_an_address() -> None:
    with pytest.raises(ValueError, match="names a host: open_bind"):
        open_listener(parse_bind("localhost:0"), backlog=8)


def test_resolve_leaves_addresses_alone() -> None:
    bind = parse_bind("127.0.0.1:5")
    assert resolve(bind) == [bind]


def test_open_listener_checks_its_options() -> None:
    bind = parse_bind("127.0.0.1:0")
    with pytest.raises(ValueError, match="backlog"):
        open_listener(bind, backlog=0)
    unix = parse_bind("unix:/tmp/never-created.sock")
    with pytest.raises(ValueError, match="unix_mode"):
        open_listener(unix, backlog=BACKLOG, unix_mode=0o10000)
    with pytest.raises(ValueError, match="reuse_port is for TCP"):
        open_listener(unix, backlog=BACKLOG, reuse_port=True)
    assert not os.path.exists("/tmp/never-created.sock")


# -- TCP -----------------------------------------------------------------------------------


def test_tcp_ipv4_port_zero(opened: Opener) -> None:
    sock = opened("127.0.0.1:0")
    port = port_of(sock)
    assert port != 0
    assert sock.family == socket.AF_INET
    assert sock.type == socket.SOCK_STREAM
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    assert not sock.get_inheritable()
    assert listener_address(sock) == f"127.0.0.1:{port}"
    assert exchange(sock, ("127.0.0.1", port))[0] == "127.0.0.1"


def test_tcp_port_in_use_names_the_address(opened: Opener) -> None:
    port = port_of(opened("127.0.0.1:0"))
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as info:
        opened(f"127.0.0.1:{port}")
    assert info.value.errno == errno.EADDRINUSE


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_lets_two_listeners_share_a_port(opened: Opener) -> None:
    first = opened("127.0.0.1:0", reuse_port=True)
    port = port_of(first)
    second = opened(f"127.0.0.1:{port}", reuse_port=True)
    assert port_of(second) == port
    for sock in (first, second):
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        ready, _, _ = select.select([first, second], [], [], 5)
        assert ready, "neither listener got the connection"
        conn, _ = ready[0].accept()
        with conn:
            client.sendall(b"x")
            assert conn.recv(1) == b"x"


@needs_ipv6
def test_ipv6_loopback(opened: Opener) -> None:
    sock = opened("[::1]:0")
    port = port_of(sock)
    assert sock.family == socket.AF_INET6
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert listener_address(sock) == f"[::1]:{port}"
    assert exchange(sock, ("::1", port))[0] == "::1"


@needs_ipv6
def test_dual_stack_accepts_ipv4(opened: Opener) -> None:
    sock = opened("[::]:0")
    if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
        pytest.skip("this OS forces IPV6_V6ONLY")
    port = port_of(sock)
    assert listener_address(sock) == f"[::]:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        sock.settimeout(5)
        conn, peer = sock.accept()
        with conn:
            client.sendall(b"v4")
            assert conn.recv(2) == b"v4"
    assert peer[0] == "::ffff:127.0.0.1"
    assert exchange(sock, ("::1", port))[0] == "::1"


# -- Unix domain sockets -------------------------------------------------------------------


@needs_unix
@pytest.mark.parametrize("umask", [0o077, 0o000])
@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_unix_mode_is_applied_whatever_the_umask(
    opened: Opener, sockdir: Path, mode: int, umask: int
) -> None:
    path = sockdir / "app.sock"
    previous = os.umask(umask)
    try:
        sock = opened(f"unix:{path}", unix_mode=mode)
    finally:
        os.umask(previous)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == mode
    assert listener_address(sock) == f"unix:{path}"
    assert not sock.get_inheritable()
    exchange(sock, str(path))


@needs_unix
def test_unix_default_mode_is_0660(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "app.sock"
    opened(f"unix:{path}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


@needs_unix
def test_unix_stale_socket_file_is_replaced(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "app.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))  # closed without unlink: a stale file, nobody listening
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as plain:
        with pytest.raises(OSError) as info:
            plain.bind(str(path))  # the stale file does block a plain bind
        assert info.value.errno == errno.EADDRINUSE
    sock = opened(f"unix:{path}")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    exchange(sock, str(path))


@needs_unix
def test_unix_live_socket_is_refused(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "app.sock"
    live = opened(f"unix:{path}")
    with pytest.raises(OSError, match=f"cannot listen on unix:{path}: address in use") as info:
        opened(f"unix:{path}")
    assert info.value.errno == errno.EADDRINUSE
    # The probe was one connection, closed at once; the live server keeps working.
    live.settimeout(5)
    probe, _ = live.accept()
    with probe:
        assert probe.recv(1) == b""
    exchange(live, str(path))


@needs_unix
@pytest.mark.parametrize("what", ["file", "directory", "symlink"])
def test_unix_refuses_a_non_socket_and_leaves_it_alone(
    opened: Opener, sockdir: Path, what: str
) -> None:
    path = sockdir / "app.sock"
    if what == "file":
        path.write_text("keep me")
    elif what == "directory":
        path.mkdir()
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
            old.bind(str(sockdir / "target.sock"))  # a stale socket behind the link
        path.symlink_to(sockdir / "target.sock")
    with pytest.raises(OSError, match=f"unix:{path}: the path exists and is not a socket") as info:
        opened(f"unix:{path}")
    assert info.value.errno == errno.EEXIST
    if what == "file":
        assert path.read_text() == "keep me"
    elif what == "directory":
        assert path.is_dir()
    else:
        assert path.is_symlink()
        assert (sockdir / "target.sock").exists()


@needs_unix
def test_unix_relative_path_survives_chdir(
    opened: Opener, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sockdir)
    sock = open_listener(parse_bind("unix:rel.sock"), backlog=BACKLOG)
    assert listener_address(sock) == "unix:rel.sock"
    assert (sockdir / "rel.sock").exists()
    monkeypatch.chdir("/")
    close_listener(sock)
    assert not (sockdir / "rel.sock").exists()


@needs_unix
def test_unix_path_too_long_names_the_address(opened: Opener, sockdir: Path) -> None:
    path = sockdir / ("x" * 200)
    with pytest.raises(OSError, match=f"cannot listen on unix:{path}"):
        opened(f"unix:{path}")
    assert not path.exists()


@needs_unix
def test_unix_missing_directory_names_the_address(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "no-such-dir" / "app.sock"
    with pytest.raises(FileNotFoundError, match=f"cannot listen on unix:{path}"):
        opened(f"unix:{path}")


# -- fd:// -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["127.0.0.1:0", "unix"])
def test_fd_adopts_a_listening_socket(opened: Opener, sockdir: Path, spec: str) -> None:
    if spec == "unix":
        if not hasattr(socket, "AF_UNIX"):
            pytest.skip("no AF_UNIX")
        spec = f"unix:{sockdir / 'app.sock'}"
    real = opened(spec)
    dup = os.dup(real.fileno())
    adopted = open_listener(parse_bind(f"fd://{dup}"), backlog=BACKLOG)
    try:
        assert adopted.fileno() == dup
        assert adopted.family == real.family
        assert adopted.type == socket.SOCK_STREAM
        assert not os.get_inheritable(dup)
        assert listener_address(adopted) == listener_address(real)
        exchange(adopted, real.getsockname())
    finally:
        close_listener(adopted)
    with pytest.raises(OSError):
        os.fstat(dup)  # the adopted socket owned the fd


def _non_listening_fd(what: str) -> tuple[int, list[int]]:
    """A descriptor of the given sort, plus every fd to close afterwards."""
    if what == "pipe":
        read, write = os.pipe()
        return read, [read, write]
    if what == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound, never listen()ed
    fd = sock.detach()
    return fd, [fd]


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("tcp-not-listening", "is not listening"),
        ("udp", "is not a stream socket"),
        ("pipe", "is not a socket"),
    ],
)
def test_fd_refuses_what_is_not_a_listener_and_leaves_it_open(what: str, message: str) -> None:
    fd, to_close = _non_listening_fd(what)
    try:
        with pytest.raises(ValueError, match=f"fd://{fd} {message}"):
            open_listener(parse_bind(f"fd://{fd}"), backlog=BACKLOG)
        os.fstat(fd)  # still open: it was never ours to close
    finally:
        for each in to_close:
            os.close(each)


def test_fd_not_open() -> None:
    fd = os.dup(0)
    os.close(fd)
    with pytest.raises(OSError, match=f"cannot use fd://{fd}") as info:
        open_listener(Bind("fd", fd=fd), backlog=BACKLOG)
    assert info.value.errno == errno.EBADF


# -- systemd socket activation ---------------------------------------------------------

CHILD = r"""
import json, os, sys
from wsgibridge.serving import listen

sources = [int(fd) for fd in sys.argv[1:]]
parked = [os.dup2(fd, 100 + i) for i, fd in enumerate(sources)]
for fd in sources:
    os.close(fd)
for i, fd in enumerate(parked):
    os.dup2(fd, listen.SD_LISTEN_FDS_START + i)  # inheritable, as systemd leaves them
    os.close(fd)
if os.environ.get("LISTEN_PID") == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())

result = {}
try:
    found = listen.systemd_listeners()
except ValueError as exc:
    result["error"] = str(exc)
    found = []
result["found"] = [[s.fileno(), listen.listener_address(s)] for s in found]
result["inheritable"] = [os.get_inheritable(3 + i) for i in range(len(sources))]
result["env"] = sorted(name for name in os.environ if name.startswith("LISTEN_"))
result["again"] = len(listen.systemd_listeners())
for sock in found:
    listen.close_listener(sock)
print(json.dumps(result))
"""


def run_activated(sockets: list[socket.socket], **variables: str) -> dict[str, Any]:
    """Run CHILD with ``sockets`` on fds 3, 4, … and LISTEN_* ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LISTEN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [IMPORT_ROOT, env.get("PYTHONPATH")]))
    env.update(variables)
    fds = [sock.fileno() for sock in sockets]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, fds)],
        pass_fds=fds,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def activation_sockets(opened: Opener, sockdir: Path) -> list[socket.socket]:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX")
    return [opened("127.0.0.1:0"), opened(f"unix:{sockdir / 'app.sock'}")]


def test_systemd_activation(activation_sockets: list[socket.socket], sockdir: Path) -> None:
    tcp, unix = activation_sockets
    result = run_activated(
        activation_sockets, LISTEN_PID="self", LISTEN_FDS="2", LISTEN_FDNAMES="web:admin"
    )
    assert "error" not in result
    assert result["found"] == [
        [3, f"127.0.0.1:{port_of(tcp)}"],
        [4, f"unix:{sockdir / 'app.sock'}"],
    ]
    assert result["inheritable"] == [False, False]  # FD_CLOEXEC set
    assert result["env"] == []  # removed, so children do not inherit them
    assert result["again"] == 0
    # close_listener in the child did not unlink the inherited socket's path.
    assert stat.S_ISSOCK(os.stat(sockdir / "app.sock").st_mode)
    exchange(unix, str(sockdir / "app.sock"))


def test_systemd_pid_mismatch_is_ignored(activation_sockets: list[socket.socket]) -> None:
    # Our pid is not the child's: the variables were meant for another process.
    result = run_activated(activation_sockets, LISTEN_PID=str(os.getpid()), LISTEN_FDS="2")
    assert result == {"found": [], "inheritable": [True, True], "env": [], "again": 0}


@pytest.mark.parametrize(
    "variables",
    [{}, {"LISTEN_FDS": "1"}, {"LISTEN_PID": "self"}, {"LISTEN_PID": "self", "LISTEN_FDS": "0"}],
)
def test_systemd_not_activated(opened: Opener, variables: dict[str, str]) -> None:
    result = run_activated([opened("127.0.0.1:0")], **variables)
    assert result == {"found": [], "inheritable": [True], "env": [], "again": 0}


def test_systemd_refuses_a_datagram_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        result = run_activated([udp], LISTEN_PID="self", LISTEN_FDS="1")
    assert "fd://3 (from systemd LISTEN_FDS) is not a stream socket" in result["error"]
    assert result["found"] == []
    assert result["inheritable"] == [False]  # FD_CLOEXEC set first, as sd_listen_fds does
    assert result["env"] == []


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LISTEN_PID": "self", "LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not a decimal"),
        ({"LISTEN_PID": "abc", "LISTEN_FDS": "1"}, "LISTEN_PID='abc' is not a decimal"),
        ({"LISTEN_PID": "0", "LISTEN_FDS": "1"}, "LISTEN_PID=0 is not a process id"),
    ],
)
def test_systemd_malformed_variables(
    opened: Opener, variables: dict[str, str], message: str
) -> None:
    result = run_activated([opened("127.0.0.1:0")], **variables)
    assert message in result["error"]
    assert result["env"] == []


def test_systemd_listeners_not_activated_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert systemd_listeners() == []
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd_listeners() == []
    assert "LISTEN_PID" not in os.environ
    assert "LISTEN_FDS" not in os.environ


# -- listener_address and close_listener -------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
def test_listener_address_abstract_unix() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(f"\0wbl-{os.getpid()}")
        assert listener_address(sock) == f"unix:@wbl-{os.getpid()}"


@needs_unix
def test_close_listener_unlinks_our_unix_path(sockdir: Path) -> None:
    path = sockdir / "app.sock"
    sock = open_listener(parse_bind(f"unix:{path}"), backlog=BACKLOG)
    assert path.exists()
    close_listener(sock)
    assert sock.fileno() == -1
    assert not path.exists()
    close_listener(sock)  # again: harmless


def test_close_listener_tcp() -> None:
    sock = open_listener(parse_bind("127.0.0.1:0"), backlog=BACKLOG)
    close_listener(sock)
    assert sock.fileno() == -1


@needs_unix
def test_close_listener_leaves_an_adopted_unix_path(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "app.sock"
    real = opened(f"unix:{path}")
    adopted = open_listener(Bind("fd", fd=os.dup(real.fileno())), backlog=BACKLOG)
    close_listener(adopted)
    assert path.exists()
    exchange(real, str(path))


@needs_unix
def test_close_listener_leaves_a_replaced_path(sockdir: Path) -> None:
    path = sockdir / "app.sock"
    sock = open_listener(parse_bind(f"unix:{path}"), backlog=BACKLOG)
    os.unlink(path)
    path.write_text("someone else's")
    close_listener(sock)
    assert path.read_text() == "someone else's"


@needs_unix
def test_close_listener_leaves_a_successors_socket(opened: Opener, sockdir: Path) -> None:
    path = sockdir / "app.sock"
    first = open_listener(parse_bind(f"unix:{path}"), backlog=BACKLOG)
    os.unlink(path)
    successor = opened(f"unix:{path}")
    close_listener(first)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    exchange(successor, str(path))


@needs_unix
def test_close_listener_in_a_forked_child_leaves_the_path(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sockdir / "app.sock"
    sock = open_listener(parse_bind(f"unix:{path}"), backlog=BACKLOG)
    parent = os.getpid()
    with monkeypatch.context() as patch:
        patch.setattr(os, "getpid", lambda: parent + 1)  # as seen after fork()
        close_listener(sock)
    assert path.exists()
    os.unlink(path)
