"""The live server misbehaving on request (``server.faults``), seen by real clients.

Each fault is checked with the client a user's test would use - requests and
urllib3's ``Retry``, httpx, http.client, raw bytes - and each ends with the
server answering normally again, so a retry test sees fail-then-succeed.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from wsgibridge._types import Environ, StartResponse
from wsgibridge.testing import MALFORMED_STATUS, RawClient
from wsgibridge.testing.faults import MAX_DELAY
from wsgibridge.testing.faultyhandler import UNFRAMED
from wsgibridge.testing.liveserver import LiveServer

Factory = Callable[..., LiveServer]
RawFactory = Callable[..., RawClient]

BODY = b"hello from the app\n"


def app(environ: Environ, start_response: StartResponse) -> Any:
    """Reads the whole body; ``/stream`` answers chunked, anything else with a length."""
    received = environ["wsgi.input"].read()
    body = BODY + b"received %d\n" % len(received)
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([BODY, b"received %d\n" % len(received)])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server(wsgi_server: Factory) -> LiveServer:
    return wsgi_server(app)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def retrying(session: requests.Session, total: int = 3) -> requests.Session:
    retry = Retry(total=total, connect=total, read=total, backoff_factor=0)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def get(server: LiveServer, path: str = "/") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % server.port


# -- delays ------------------------------------------------------------------------------


def test_delay_response_makes_a_client_time_out_then_the_next_request_is_answered(
    server: LiveServer, session: requests.Session
) -> None:
    fault = server.faults.delay_response(1.0, times=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(server.url, timeout=0.2)
    response = session.get(server.url, timeout=5)
    assert response.content.startswith(BODY)
    assert fault.hits == 1


def test_a_faulted_response_keeps_its_request_id(
    wsgi_server: Factory, session: requests.Session
) -> None:
    """With ``request_id_header``, a response sent under a fault carries the id the access
    record has, as an unfaulted one does."""
    server = wsgi_server(app, request_id_header="X-Request-ID", forwarded_allow_ips="127.0.0.1")
    server.faults.delay_response(0.01, times=1)
    faulted = session.get(server.url, headers={"X-Request-ID": "id-1"}, timeout=5)
    plain = session.get(server.url, headers={"X-Request-ID": "id-2"}, timeout=5)
    assert (faulted.headers["X-Request-ID"], plain.headers["X-Request-ID"]) == ("id-1", "id-2")


def test_delay_first_byte_sends_the_head_then_waits(
    server: LiveServer, raw_client: RawFactory
) -> None:
    server.faults.delay_first_byte(0.5)
    client = raw_client(server)
    client.send(get(server))
    head = client.recv_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    client.sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        client.recv()  # the head is here, the body is not
    client.sock.settimeout(5)
    assert client.recv_until(b"received 0\n").startswith(BODY)


def test_clear_wakes_a_request_asleep_on_a_fault(
    server: LiveServer, raw_client: RawFactory
) -> None:
    server.faults.delay_response(MAX_DELAY)
    client = raw_client(server, timeout=0.3)
    client.send(get(server))
    with pytest.raises(TimeoutError):
        client.recv()
    server.faults.clear()
    client.sock.settimeout(5)  # far less than the delay asked for
    assert client.recv_response().body.startswith(BODY)


def test_delays_are_bounded(server: LiveServer) -> None:
    with pytest.raises(ValueError):
        server.faults.delay_response(MAX_DELAY + 1)
    with pytest.raises(ValueError):
        server.faults.delay_first_byte(-1)
    with pytest.raises(ValueError):
        server.faults.cut_after(5, times=0)
    with pytest.raises(ValueError):
        server.faults.refuse_connections()
    assert not server.faults.active


# -- reading the body ---------------------------------------------------------------------


def test_slow_read_paces_an_upload(server: LiveServer, session: requests.Session) -> None:
    server.faults.slow_read(128 * 1024)  # a 64 KiB body: half a second at least
    began = time.monotonic()
    response = session.post(server.url, data=b"x" * 65536, timeout=5)
    took = time.monotonic() - began
    assert response.content.endswith(b"received 65536\n")
    assert took >= 0.45
    assert server.requests[0].body_size == 65536


def test_stop_reading_makes_the_clients_send_time_out(server: LiveServer) -> None:
    server.faults.stop_reading(times=1)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=0.5)
    try:
        with pytest.raises(TimeoutError):
            # Far more than the socket buffers hold: the send must block.
            connection.request("POST", "/", body=b"x" * (64 * 1024 * 1024))
    finally:
        connection.close()
    server.faults.clear()  # the held request ends (as if the client had gone)
    assert requests.get(server.url, timeout=5).content.startswith(BODY)


# -- cutting the connection -------------------------------------------------------------


def test_retry_succeeds_past_cuts_and_the_server_saw_each_attempt(
    server: LiveServer, session: requests.Session
) -> None:
    fault = server.faults.cut_after(10, times=2)  # inside the status line
    response = retrying(session).get(server.url + "flaky", timeout=5)
    assert response.status_code == 200
    assert response.content.startswith(BODY)
    assert fault.hits == 2
    assert [r.path for r in server.requests] == ["/flaky"] * 3


def test_without_retries_a_cut_is_an_error(server: LiveServer, session: requests.Session) -> None:
    server.faults.cut_after(0)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(server.url, timeout=5)


@pytest.mark.parametrize("reset", [False, True])
def test_cut_after_sends_exactly_that_many_bytes(
    server: LiveServer, raw_client: RawFactory, reset: bool
) -> None:
    server.faults.cut_after(40, reset=reset)
    client = raw_client(server)
    client.send(get(server))
    received = b""
    while chunk := client.recv():
        received += chunk
    if reset:
        assert len(received) <= 40  # a reset may destroy what was in flight
    else:
        assert len(received) == 40
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert client.closed()


def test_cut_inside_the_body_is_an_incomplete_read(
    server: LiveServer, raw_client: RawFactory
) -> None:
    client = raw_client(server)
    client.send(get(server))
    whole = client.recv_response()
    head_size = len(whole.raw) - len(whole.body)
    server.faults.cut_after(head_size + 5)  # five bytes into the body
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert caught.value.partial == BODY[:5]
    finally:
        connection.close()


def test_a_body_cut_short_is_not_retried(
    server: LiveServer, raw_client: RawFactory, session: requests.Session
) -> None:
    """urllib3 retries until the head is in; requests reads the body after that."""
    client = raw_client(server)
    client.send(get(server))
    whole = client.recv_response()
    server.faults.cut_after(len(whole.raw) - len(whole.body) + 5)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        retrying(session).get(server.url, timeout=5)
    assert len(server.requests) == 2  # the measuring request, and one attempt


def test_refused_connections_are_retried_until_one_is_served(
    server: LiveServer, session: requests.Session
) -> None:
    fault = server.faults.refuse_connections(times=2)
    response = retrying(session).get(server.url, timeout=5)
    assert response.status_code == 200
    assert fault.hits == 2
    assert server.faults.refused == 2
    assert len(server.requests) == 1  # refused connections never reached the app


def test_refusing_for_a_while_spares_kept_alive_connections(
    server: LiveServer, raw_client: RawFactory
) -> None:
    kept = raw_client(server)
    kept.send(get(server))
    assert kept.recv_response().status == 200
    server.faults.refuse_connections(1.0)
    with pytest.raises(ConnectionResetError):
        refused = raw_client(server)  # the reset can come before connect() returns
        refused.send(get(server))
        assert refused.sock.recv(1) == b"", "a response to a refused connection"
    kept.send(get(server))
    assert kept.recv_response().status == 200  # an open connection is served
    time.sleep(1.1)
    later = raw_client(server)
    later.send(get(server))
    assert later.recv_response().status == 200


# -- what the client receives --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MALFORMED_STATUS))
def test_malformed_status_lines_are_protocol_errors_for_httpx(
    server: LiveServer, name: str
) -> None:
    server.faults.malformed_status(name, times=1)
    with httpx.Client(timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(server.url)
        assert client.get(server.url).status_code == 200


def test_a_given_status_line_is_sent_as_is(server: LiveServer, raw_client: RawFactory) -> None:
    server.faults.malformed_status(b"HTTP/1.1 2OO OK")
    client = raw_client(server)
    client.send(get(server))
    assert client.recv_until(b"\r\n") == b"HTTP/1.1 2OO OK\r\n"
    with pytest.raises(ValueError):
        server.faults.malformed_status("no-such-name")


@pytest.mark.parametrize("path", ["/", "/stream"])
def test_short_framing_is_an_incomplete_read(server: LiveServer, path: str) -> None:
    server.faults.bad_framing("short")
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/", "/stream"])
def test_a_bad_chunk_is_refused_by_http_client_and_httpx(server: LiveServer, path: str) -> None:
    server.faults.bad_framing("bad-chunk")
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        connection.close()
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url + path.lstrip("/"))


def test_long_framing_poisons_the_next_response_on_the_connection(
    server: LiveServer, raw_client: RawFactory
) -> None:
    server.faults.bad_framing("long", times=1)
    client = raw_client(server)
    client.send(get(server) + get(server))  # pipelined
    first = client.recv_response()
    assert first.body.startswith(BODY)
    assert client.recv_until(b"\r\n") == UNFRAMED
    assert client.recv_response().status == 200


# -- which requests -----------------------------------------------------------------------


def test_faults_apply_to_their_path_for_their_count(
    server: LiveServer, session: requests.Session
) -> None:
    fault = server.faults.malformed_status(path="/flaky", times=2)
    assert session.get(server.url + "other", timeout=5).status_code == 200
    for _ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(server.url + "flaky", timeout=5)
    assert session.get(server.url + "flaky", timeout=5).status_code == 200
    assert fault.hits == 2
    assert [r.path for r in server.requests] == ["/other", "/flaky", "/flaky", "/flaky"]


def test_faults_of_different_kinds_combine(server: LiveServer, raw_client: RawFactory) -> None:
    server.faults.delay_response(1.0)
    server.faults.malformed_status(b"HTTP/1.1 299 Odd")
    client = raw_client(server, timeout=0.1)
    client.send(get(server))
    with pytest.raises(TimeoutError):
        client.recv()
    client.sock.settimeout(5)
    assert client.recv_until(b"\r\n") == b"HTTP/1.1 299 Odd\r\n"


# -- recorded bodies -----------------------------------------------------------------------


def test_recorded_bodies_are_capped_with_a_flag(wsgi_server: Factory) -> None:
    server = wsgi_server(app, record_body_limit=1024)
    requests.post(server.url, data=b"a" * 100, timeout=5)
    requests.post(server.url, data=b"b" * 4096, timeout=5)
    small, large = server.requests
    assert (small.body, small.body_truncated) == (b"a" * 100, False)
    assert (large.body, large.body_truncated, large.body_size) == (b"b" * 1024, True, 4096)


def test_a_chunked_upload_is_recorded_as_the_app_read_it(server: LiveServer) -> None:
    requests.post(server.url, data=iter([b"one ", b"two"]), timeout=5)
    (seen,) = server.requests
    assert seen.header("Transfer-Encoding") == "chunked"
    assert seen.body == b"one two"


def test_a_body_the_app_never_read_is_not_kept(wsgi_server: Factory) -> None:
    def ignores_the_body(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    server = wsgi_server(ignores_the_body)
    requests.post(server.url, data=b"z" * 10, timeout=5)
    (seen,) = server.requests
    assert (seen.body, seen.body_size) == (b"", 10)


def test_record_body_limit_zero_keeps_no_body(wsgi_server: Factory) -> None:
    server = wsgi_server(app, record_body_limit=0)
    requests.post(server.url, data=b"q" * 10, timeout=5)
    assert server.requests[0].body == b""
    with pytest.raises(ValueError):
        wsgi_server(app, record_body_limit=-1)


# -- the raw client ------------------------------------------------------------------------


def test_raw_client_refuses_what_is_not_http(server: LiveServer, raw_client: RawFactory) -> None:
    server.faults.malformed_status("garbage", times=1)
    client = raw_client(server)
    client.send(get(server))
    with pytest.raises(ValueError):
        client.recv_response()


def test_raw_client_reports_a_close_before_the_marker(
    server: LiveServer, raw_client: RawFactory
) -> None:
    server.faults.cut_after(5)
    client = raw_client(server)
    client.send(get(server))
    with pytest.raises(EOFError):
        client.recv_until(b"\r\n\r\n")


def test_the_server_stops_promptly_with_requests_held(wsgi_server: Factory) -> None:
    server = wsgi_server(app)
    server.faults.stop_reading()
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            requests.post(server.url, data=b"x" * 1000, timeout=5)
        except requests.exceptions.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(0.2)
    assert server.stop() < 3.0  # not the minute stop_reading would hold the body
    thread.join(5)
    assert not thread.is_alive()
    assert errors  # the held upload got no answer


def test_faults_apply_over_https(wsgi_server: Factory, session: requests.Session) -> None:
    server = wsgi_server(app, https=True)
    server.faults.cut_after(10, times=1)
    assert retrying(session).get(server.url, verify=server.ca_file, timeout=5).ok
    server.faults.malformed_status("bad-code", times=1)
    assert server.ca_file is not None
    context = ssl.create_default_context(cafile=server.ca_file)
    with httpx.Client(verify=context, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(server.url)
        assert client.get(server.url).status_code == 200
    assert len(server.requests) == 4
