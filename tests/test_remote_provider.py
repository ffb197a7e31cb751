"""The "azure" provider end to end: nnhost B offloads large batches to nnhost A over
the Open Inference Protocol, falls back to its CPU when A is down, hangs or answers
garbage, and goes back to A once the circuit breaker's probe passes."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MINILM, ROUTER_WASM, Server, free_port
from test_embeddings import MODEL, SENTENCES, vectors

FIVE = SENTENCES + ["A fourth sentence about trains.", "And a fifth one about the sea."]

B_CONFIG = """
[[models]]
name = "{model}"
path = "{minilm}"
[models.remote]
url = "http://127.0.0.1:{remote_port}"
token_env = "NNHOST_TEST_REMOTE_TOKEN"
connect_timeout_ms = 300
timeout_ms = {timeout_ms}
[models.routing]
policy = "threshold"
threshold = 4
breaker_failures = 1
probe_interval_ms = 200

[[tenants]]
name = "default"
public = true
component = "{router}"
"""

A_CONFIG = """
[[models]]
name = "{model}"
path = "{minilm}"

[[tenants]]
name = "offload"
api_keys = ["s3cret"]
component = "{router}"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""


def start_a(tmp, port):
    return Server(A_CONFIG.format(model=MODEL, minilm=MINILM, router=ROUTER_WASM), tmp, port=port)


def start_b(tmp, remote_port, timeout_ms=3000):
    text = B_CONFIG.format(model=MODEL, minilm=MINILM, router=ROUTER_WASM, remote_port=remote_port,
                           timeout_ms=timeout_ms)
    return Server(text, tmp, env={"NNHOST_TEST_REMOTE_TOKEN": "s3cret"})


def post(server, texts):
    r = server.post("/v1/embeddings", {"model": MODEL, "input": texts})
    assert r.status_code == 200, r.text
    return r.headers["x-nnhost-provider"], vectors(r)


def fallbacks(server) -> float:
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    fam = families.get("nnhost_fallbacks")
    return sum(s.value for s in fam.samples if s.name.endswith("_total")) if fam else 0.0


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_offload_fallback_and_recovery(tmp_path):
    port_a = free_port()
    a = start_a(tmp_path / "a", port_a)
    b = start_b(tmp_path / "b", port_a)
    try:
        local_provider, two = post(b, SENTENCES[:2])
        assert local_provider.startswith("cpu-")
        remote_provider, five_remote = post(b, FIVE)
        assert remote_provider == "azure"
        _, five_direct = post(a, FIVE)
        assert np.max(np.abs(five_remote - five_direct)) <= 1e-5
        status = b.get("/status").json()
        azure = next(p for p in status["models"][0]["routing"]["providers"] if p["name"] == "azure")
        assert azure["requests"] >= 1 and azure["breaker"] == "closed"

        a.stop()
        before = fallbacks(b)
        provider, five_local = post(b, FIVE)
        assert provider.startswith("cpu-")
        assert np.max(np.abs(five_local - five_direct)) <= 1e-5
        assert fallbacks(b) > before
        status = b.get("/status").json()
        azure = next(p for p in status["models"][0]["routing"]["providers"] if p["name"] == "azure")
        assert azure["breaker"] == "open" and azure["last_error"]
        # While the breaker is open, large batches run locally without trying the remote.
        assert post(b, FIVE)[0].startswith("cpu-")

        a = start_a(tmp_path / "a2", port_a)
        assert wait_for(lambda: post(b, FIVE)[0] == "azure"), "B did not return to the remote after its probe"
    finally:
        a.stop()
        b.stop()


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.auth = self.headers.get("authorization")
        body = self.server.reply
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("reply", [
    b"this is not json",
    b'{"model_name":"m","outputs":[]}',
    b'{"model_name":"m","outputs":[{"name":"last_hidden_state","shape":[1,2],"datatype":"FP32","data":[1,2]}]}',
])
def test_garbage_replies_fall_back_to_cpu(tmp_path, reply):
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    fake.reply = reply
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    b = start_b(tmp_path, fake.server_address[1])
    try:
        provider, got = post(b, FIVE)
        assert provider.startswith("cpu-")
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert fallbacks(b) >= 1
        assert fake.auth == "Bearer s3cret", "the bearer token from the configured variable is sent"
    finally:
        b.stop()
        fake.shutdown()


def test_a_hanging_remote_times_out_and_falls_back(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections, never answers
    b = start_b(tmp_path, listener.getsockname()[1], timeout_ms=500)
    try:
        started = time.time()
        provider, _ = post(b, FIVE)
        assert provider.startswith("cpu-")
        assert time.time() - started < 5
        families = {f.name: f for f in text_string_to_metric_families(b.get("/metrics").text)}
        reasons = {s.labels["reason"] for s in families["nnhost_fallbacks"].samples}
        assert "timeout" in reasons
    finally:
        b.stop()
        listener.close()


def test_adaptive_policy_learns_and_reports_its_choice(tmp_path):
    port_a = free_port()
    a = start_a(tmp_path / "a", port_a)
    text = B_CONFIG.format(model=MODEL, minilm=MINILM, router=ROUTER_WASM, remote_port=port_a, timeout_ms=3000)
    text = text.replace('policy = "threshold"', 'policy = "adaptive"\nexplore = 0.5')
    b = Server(text, tmp_path / "b", env={"NNHOST_TEST_REMOTE_TOKEN": "s3cret"})
    try:
        providers = set()
        for _ in range(12):
            providers.add(post(b, FIVE)[0])
        assert "azure" in providers and any(p.startswith("cpu-") for p in providers), providers
        routing = b.get("/status").json()["models"][0]["routing"]
        assert routing["policy"] == "adaptive"
        choice = routing["adaptive_choice"]
        assert choice and all(c["choice"] in ("local", "remote") for c in choice), choice
        bucket = next(c for c in choice if c["batch_size_from"] <= 5)
        assert bucket["local_ms_per_input"] is not None and bucket["remote_ms_per_input"] is not None
    finally:
        a.stop()
        b.stop()
