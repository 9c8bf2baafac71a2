"""Header injection and lying headers on the wire, against a real uvicorn server.

An HTTP client refuses to send most of this, so the requests are written to a socket by hand.
What the HTTP parser itself refuses (a CR or NUL inside a header) never reaches the app and gets
uvicorn's plain 400; what reaches the app gets the error body. Never a 5xx either way.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tests.support.pg import free_port

ENROLL = b"/api/v1/studies/keep4o-panel/enrollments"


@pytest.fixture
def backend() -> str:
    """HTTP parsing does not depend on the database: SQLite only, to keep the suite quick."""
    return "sqlite"


@pytest.fixture
def server(app) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
                            access_log=False)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    instance.should_exit = True
    thread.join(timeout=10)


def _send(port: int, raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and _complete(data):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _request(method: bytes, path: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body)


@pytest.mark.parametrize("header", [
    b"Authorization: Bearer abc\rX-Injected: 1",
    b"Authorization: Bearer abc\x00def",
    b"X-Forwarded-For: 1.2.3.4\r Set-Cookie: a=b",
    b"Content-Length: 5\r\nContent-Length: 900000",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    b"Content-Length: 99999999999999999999999999",
    b"Content-Length: -1",
])
def test_the_parser_refuses_smuggling_and_injection(server, header):
    status, body = _send(server, _request(b"POST", ENROLL, [header,
                                                            b"Content-Type: application/json"],
                                          b"{}"))
    assert 400 <= status < 500, body[:300]


@pytest.mark.parametrize(("headers", "body", "expected", "code"), [
    ([b"Content-Length: 70000"], b"", 413, b"payload_too_large"),
    ([b"Content-Type: text/plain", b"Content-Length: 2"], b"{}", 415,
     b"unsupported_media_type"),
    ([b"Content-Type: application/json", b"Content-Length: 11"], b'{"email": 1',
     422, b"validation_failed"),
    ([b"Content-Type: application/json", b"Content-Length: 7"], b'{"a":\xff}', 400,
     b"invalid_body"),
    ([b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
     b"11170\r\n" + b"a" * 70_000 + b"\r\n0\r\n\r\n", 413, b"payload_too_large"),
])
def test_lying_and_oversized_bodies_get_the_error_body(server, headers, body, expected, code):
    status, answer = _send(server, _request(b"POST", ENROLL, headers, body))
    assert status == expected, answer[:300]
    assert b'"error"' in answer and code in answer


def test_a_bad_token_in_a_header_is_401_with_the_body(server):
    status, body = _send(server, _request(b"GET", b"/api/v1/me", [
        b"Authorization: Bearer \xff\xfe' OR 1=1 --", b"Cookie: wp_session=\xff\xfe"]))
    assert status == 401 and b'"code":"unauthorized"' in body
