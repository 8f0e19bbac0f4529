"""`fleet serve`'s parts: the bind address, and the web server's cap on request bodies."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from fleet.errors import ConfigError
from fleet.serve import build_web_server, parse_bind
from fleet.web import MAX_REQUEST_BYTES


@pytest.mark.parametrize("bind, expected", [
    pytest.param("127.0.0.1:8080", ("127.0.0.1", 8080), id="ipv4"),
    pytest.param("[::1]:9000", ("::1", 9000), id="ipv6 in brackets"),
    pytest.param("0.0.0.0:80", ("0.0.0.0", 80), id="all addresses"),
])
def test_parse_bind(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["8080", "localhost", "host:port", ":8080"])
def test_parse_bind_refuses_what_is_not_host_and_port(bind):
    with pytest.raises(ConfigError, match="FLEET_BIND"):
        parse_bind(bind)


# --- the web server's body cap (a real waitress on a loopback port, a raw socket as the client) -----------

def body_length_app(environ, start_response):
    """Answers how many body bytes reached the application."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"received": len(body)}).encode()]


@pytest.fixture
def web_server():
    server = build_web_server(body_length_app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port
    server.close()
    thread.join(timeout=10)


def exchange(port: int, head: bytes, body_parts=()) -> bytes:
    """Send a raw request (the server may hang up mid-body), then read whatever answer came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_a_content_length_over_the_cap_is_refused_before_any_body_is_sent(web_server):
    status, body = status_and_json(exchange(web_server, (
        b"POST /api/v1/hooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200000000\r\n\r\n")))
    assert status == 413
    assert f"({MAX_REQUEST_BYTES} bytes)" in body["error"]


def test_a_chunked_body_is_cut_at_the_cap(web_server):
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    answer = exchange(web_server, b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                      [chunk] * 24)  # 1.5 MiB offered
    assert status_and_json(answer)[0] == 413


@pytest.mark.parametrize("size, expected", [
    pytest.param(MAX_REQUEST_BYTES, 200, id="exactly the cap reaches the app"),
    pytest.param(MAX_REQUEST_BYTES + 1, 413, id="one byte more does not"),
])
def test_waitress_draws_the_line_where_flask_does(web_server, size, expected):
    answer = exchange(web_server, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                      % size, [b"x" * size])
    status, body = status_and_json(answer)
    assert status == expected
    if expected == 200:
        assert body == {"received": size}
