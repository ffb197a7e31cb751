"""What many clients at once may hold (`[server] max_connections`,
`max_buffered_body_bytes`, idle closing): connections past the limit wait for a free
one instead of exhausting the host's file descriptors, idle HTTP/2 connections are
closed like idle HTTP/1 ones, and request bodies in memory stay within a budget that
clients must actually upload to use."""
from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import requests

from conftest import MINILM, ROUTER_WASM, Server

MAX_CONNECTIONS = 6
BODY_LIMIT = 64 * 1024
BUDGET = 128 * 1024
IDLE_MS = 3000

CONFIG = f"""
[server]
header_read_timeout_ms = {IDLE_MS}
body_read_timeout_ms = 20000
max_connections = {MAX_CONNECTIONS}
max_body_bytes = {BODY_LIMIT}
max_buffered_body_bytes = {BUDGET}

[[models]]
name = "minilm"
path = "{MINILM}"

[[tenants]]
name = "default"
public = true
component = "{ROUTER_WASM}"
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG, tmp_path_factory.mktemp("connlimits"))
    srv.session.close()
    # The start-up checks' connections would hold some of the few slots: they are closed
    # once idle, after which only each scrape's own connection is open.
    wait_for_open_connections(srv, 1, within=IDLE_MS / 1000 + 5)
    yield srv
    srv.stop()


def connect(host) -> socket.socket:
    return socket.create_connection(("127.0.0.1", host.port), timeout=20)


def embedding_body(size: int) -> bytes:
    """A valid embeddings request of exactly `size` bytes (JSON padded with spaces)."""
    body = json.dumps({"model": "minilm", "input": "hello"}).encode()
    return b" " * (size - len(body)) + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def open_connections(host) -> int:
    # `connection: close`: requests may keep a finished request's socket open a while.
    text = requests.get(host.url + "/metrics", headers={"connection": "close"}, timeout=10).text
    return int(float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("nnhost_http_connections "))))


def wait_for_open_connections(host, expected: int, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while (n := open_connections(host)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert n == expected


def test_clients_past_the_connection_limit_wait_for_a_free_connection(host):
    held = [connect(host) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.3)
    waiting = connect(host)  # accepted by the kernel, not yet by the host
    waiting.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    waiting.settimeout(1.0)
    with pytest.raises(socket.timeout):
        waiting.recv(1)  # not served while all connections are held
    held.pop().close()
    waiting.settimeout(10)
    status, _, _ = read_response(waiting)
    assert status == 200
    waiting.close()
    # The five still held and the scrape's own.
    wait_for_open_connections(host, MAX_CONNECTIONS)
    for sock in held:
        sock.close()
    wait_for_open_connections(host, 1)


def h2_frames(sock: socket.socket):
    """Yields (type, flags, payload) of each HTTP/2 frame until the peer closes."""
    buffer = b""
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            yield kind, flags, buffer[9:9 + length]
            buffer = buffer[9 + length:]
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


SETTINGS, PING, GOAWAY = 4, 6, 7


def test_an_idle_http2_connection_is_closed_with_goaway(host):
    sock = connect(host)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + bytes([SETTINGS, 0]) + bytes(4))
    started = time.monotonic()
    kinds = []
    for kind, flags, payload in h2_frames(sock):
        kinds.append(kind)
        if kind == SETTINGS and not flags & 1:
            sock.sendall(struct.pack(">I", 0)[1:] + bytes([SETTINGS, 1]) + bytes(4))  # ACK
        if kind == PING and not flags & 1:
            sock.sendall(struct.pack(">I", 8)[1:] + bytes([PING, 1]) + bytes(4) + payload)
    elapsed = time.monotonic() - started
    sock.close()
    assert GOAWAY in kinds, kinds
    assert IDLE_MS / 1000 * 0.8 < elapsed < IDLE_MS / 1000 + 5, elapsed


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_bodies_in_memory_stay_within_the_budget(host, framing):
    upload = embedding_body(60_000)
    head = "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"

    def start_upload() -> socket.socket:
        sock = connect(host)
        if framing == "chunked":
            sock.sendall((head + "transfer-encoding: chunked\r\n\r\n").encode()
                         + b"%x\r\n" % (len(upload) - 10) + upload[:-10] + b"\r\n")
        else:
            sock.sendall((head + f"content-length: {len(upload)}\r\n\r\n").encode() + upload[:-10])
        return sock

    def finish_upload(sock: socket.socket) -> None:
        if framing == "chunked":
            sock.sendall(b"a\r\n" + upload[-10:] + b"\r\n0\r\n\r\n")
        else:
            sock.sendall(upload[-10:])

    uploading = [start_upload(), start_upload()]  # ~120 KB of the 128 KiB budget
    time.sleep(0.5)
    too_much = requests.post(host.url + "/v1/embeddings", data=embedding_body(20_000),
                             headers={"content-type": "application/json"}, timeout=20)
    assert too_much.status_code == 503, too_much.text
    assert too_much.headers["retry-after"] == "1"
    error = too_much.json()["error"]
    assert error["code"] == "server_busy" and error["type"] == "server_error"
    assert str(BUDGET) in error["message"]
    # A body that fits what is left is served meanwhile.
    small = requests.post(host.url + "/v1/embeddings", data=embedding_body(2_000),
                          headers={"content-type": "application/json"}, timeout=20)
    assert small.status_code == 200, small.text
    for sock in uploading:
        finish_upload(sock)
    for sock in uploading:
        status, _, body = read_response(sock)
        assert status == 200, body[:300]
        sock.close()
    # Answered uploads gave their budget back.
    again = requests.post(host.url + "/v1/embeddings", data=embedding_body(20_000),
                          headers={"content-type": "application/json"}, timeout=20)
    assert again.status_code == 200, again.text


def test_a_declared_length_alone_does_not_take_the_budget(host):
    # Promising big bodies costs nothing until the bytes arrive.
    promising = [connect(host) for _ in range(3)]
    for sock in promising:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % (BODY_LIMIT - 1))
    time.sleep(0.3)
    r = requests.post(host.url + "/v1/embeddings", data=embedding_body(BODY_LIMIT - 1),
                      headers={"content-type": "application/json"}, timeout=20)
    assert r.status_code == 200, r.text
    for sock in promising:
        sock.close()
