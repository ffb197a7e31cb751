"""Slow and idle clients (`[server] header_read_timeout_ms`, `body_read_timeout_ms`): a
client that trickles its upload must not hold its tenant's request slots, and
connections that never finish a request, or sit idle, are closed in bounded time."""
from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import MINILM, ROUTER_WASM, Server

SLOTS = 4

CONFIG = f"""
[server]
header_read_timeout_ms = 1000
body_read_timeout_ms = 1500

[[models]]
name = "minilm"
path = "{MINILM}"

[[tenants]]
name = "default"
public = true
component = "{ROUTER_WASM}"
[tenants.limits]
max_concurrent_requests = {SLOTS}
"""

BODY = json.dumps({"model": "minilm", "input": "hello"}).encode()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG, tmp_path_factory.mktemp("slow"))
    yield srv
    srv.stop()


def connect(host) -> socket.socket:
    return socket.create_connection(("127.0.0.1", host.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_trickling_uploads_neither_hold_the_tenants_slots_nor_stay_open(host):
    head = (f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n\r\n").encode()
    trickling = [connect(host) for _ in range(2 * SLOTS)]
    for sock in trickling:
        sock.sendall(head + BODY[:5])  # and nothing more
    time.sleep(0.3)
    # Twice the tenant's slots are uploading: a whole request is still served.
    r = host.post("/v1/embeddings", {"model": "minilm", "input": "served beside the trickle"})
    assert r.status_code == 200, r.text
    started = time.monotonic()
    answers = [read_until_closed(sock) for sock in trickling]
    assert time.monotonic() - started < 5
    for answer in answers:
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), answer[:200]
        error = json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout" and "1500 ms" in error["message"]
    for sock in trickling:
        sock.close()


def test_a_request_head_that_never_ends_is_dropped(host):
    sock = connect(host)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-slow: ")
    started = time.monotonic()
    read_until_closed(sock)  # hyper may answer 408 before closing; what matters is the close
    assert 0.5 < time.monotonic() - started < 5
    sock.close()


def test_idle_keep_alive_connections_are_closed_and_busy_ones_kept(host):
    sock = connect(host)
    request = (f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY
    for _ in range(3):  # requests back to back keep the connection
        sock.sendall(request)
        answer = sock.recv(65536)
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += sock.recv(65536)
        answered = time.monotonic()
        time.sleep(0.5)
    assert read_until_closed(sock) == b""
    # Closed after the 1 s header timeout, counted from the last answer (timing from the
    # end of the 0.5 s sleep instead left a window of 0.5 s minus scheduling jitter: a
    # close at 0.4994 s failed once on a loaded machine).
    assert 0.8 < time.monotonic() - answered < 5.5
    sock.close()
