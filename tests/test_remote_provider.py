"""The "azure" provider end to end: nnhost B offloads large batches to nnhost A over
the Open Inference Protocol, falls back to its CPU when A is down, hangs, answers
garbage or 5xx, and goes back to A once the circuit breaker's probe passes; an https
remote behind a private CA is reached with `ca_file` and refused without it."""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
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


def start_b(tmp, remote_port, timeout_ms=3000, url=None, ca_file=None, breaker_failures=1):
    text = B_CONFIG.format(model=MODEL, minilm=MINILM, router=ROUTER_WASM, remote_port=remote_port,
                           timeout_ms=timeout_ms)
    if url is not None:
        text = text.replace(f'url = "http://127.0.0.1:{remote_port}"', f'url = "{url}"')
    if ca_file is not None:
        text = text.replace("[models.routing]", f'ca_file = "{ca_file}"\n[models.routing]')
    text = text.replace("breaker_failures = 1", f"breaker_failures = {breaker_failures}")
    return Server(text, tmp, env={"NNHOST_TEST_REMOTE_TOKEN": "s3cret"})


def post(server, texts):
    r = server.post("/v1/embeddings", {"model": MODEL, "input": texts})
    assert r.status_code == 200, r.text
    return r.headers["x-nnhost-provider"], vectors(r)


def fallbacks(server) -> float:
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    fam = families.get("nnhost_fallbacks")
    return sum(s.value for s in fam.samples if s.name.endswith("_total")) if fam else 0.0


def metric(server, family: str, **labels) -> float:
    """The sum of a family's samples with these labels (0 when there are none)."""
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    fam = families.get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples
               if not s.name.endswith("_created") and all(s.labels.get(k) == v for k, v in labels.items()))


def azure_status(server) -> dict:
    routing = server.get("/status").json()["models"][0]["routing"]
    return next(p for p in routing["providers"] if p["name"] == "azure")


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


class OipServer:
    """A small Open Inference Protocol server: MiniLM's ONNX graph under ONNX Runtime in
    this process, over plain HTTP or TLS. While `fail_status` is set it answers inference
    and readiness with that status (a remote in trouble: 500, 503)."""

    def __init__(self, certfile=None, keyfile=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(MINILM / "onnx" / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.fail_status: int | None = None
        self.infers = 0
        self.auth = None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OipHandler)
        self.httpd.daemon_threads = True
        self.httpd.oip = self
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            # A client refusing the certificate makes accept() raise; socketserver skips it.
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def infer(self, request: dict) -> dict:
        feeds = {t["name"]: np.asarray(t["data"], dtype=np.int64).reshape(t["shape"]) for t in request["inputs"]}
        outputs = self.session.run(None, feeds)
        return {"model_name": MODEL, "outputs": [
            {"name": o.name, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
            for o, v in zip(self.session.get_outputs(), outputs)]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _OipHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Triton and KServe

    def reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        oip = self.server.oip
        if oip.fail_status:
            self.reply(oip.fail_status, {"error": "unavailable"})
        elif self.path in ("/v2/health/ready", f"/v2/models/{MODEL}/ready"):
            self.reply(200, {})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        oip = self.server.oip
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        oip.infers += 1
        oip.auth = self.headers.get("authorization")
        if oip.fail_status:
            self.reply(oip.fail_status, {"error": f"failing with {oip.fail_status} on purpose"})
        elif self.path != f"/v2/models/{MODEL}/infer":
            self.reply(404, {"error": "not found"})
        else:
            self.reply(200, oip.infer(json.loads(body)))

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [500, 503])
def test_remote_5xx_falls_back_opens_the_breaker_and_recovers(tmp_path, status):
    remote = OipServer()
    remote.fail_status = status
    b = start_b(tmp_path, remote.port, breaker_failures=2)
    try:
        assert post(b, SENTENCES[:2])[0].startswith("cpu-")  # small batches never go remote
        assert remote.infers == 0
        # Two failures in a row: both requests succeed from the CPU, the second opens the breaker.
        provider, first = post(b, FIVE)
        assert provider.startswith("cpu-") and remote.infers == 1
        assert azure_status(b)["breaker"] == "closed"
        provider, second = post(b, FIVE)
        assert provider.startswith("cpu-") and remote.infers == 2
        assert np.max(np.abs(first - second)) <= 1e-6
        assert metric(b, "nnhost_fallbacks", model=MODEL, reason="error") == 2
        assert metric(b, "nnhost_breaker_open", provider="azure") == 1
        azure = azure_status(b)
        assert azure["breaker"] == "open" and azure["state"] == "unavailable"
        assert azure["errors"] == 2 and str(status) in azure["last_error"], azure
        # Open: large batches stay local without trying the remote (its probe fails: also 5xx).
        time.sleep(0.5)
        assert post(b, FIVE)[0].startswith("cpu-")
        assert remote.infers == 2
        assert metric(b, "nnhost_fallbacks", model=MODEL, reason="error") == 2

        remote.fail_status = None
        assert wait_for(lambda: post(b, FIVE)[0] == "azure"), "B did not return to the remote after its probe"
        _, via_remote = post(b, FIVE)
        assert np.max(np.abs(via_remote - first)) <= 1e-5
        assert metric(b, "nnhost_breaker_open", provider="azure") == 0
        azure = azure_status(b)
        assert azure["breaker"] == "closed" and azure["state"] == "ready"
        assert metric(b, "nnhost_fallbacks", model=MODEL, reason="error") == 2
    finally:
        b.stop()
        remote.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed CA and a server certificate it signed for 127.0.0.1 (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=nnhost test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    return d


def test_https_remote_with_a_private_ca(tmp_path, tls_files):
    remote = OipServer(certfile=tls_files / "server.pem", keyfile=tls_files / "server.key")
    url = f"https://127.0.0.1:{remote.port}"
    trusting = start_b(tmp_path / "with-ca", remote.port, url=url, ca_file=tls_files / "ca.pem")
    # System roots only: the private CA is unknown, so the TLS handshake fails.
    untrusting = start_b(tmp_path / "without-ca", remote.port, url=url)
    try:
        provider, via_tls = post(trusting, FIVE)
        assert provider == "azure"
        assert remote.infers == 1 and remote.auth == "Bearer s3cret"
        assert azure_status(trusting)["endpoint"].startswith("https://")
        assert fallbacks(trusting) == 0

        provider, local = post(untrusting, FIVE)
        assert provider.startswith("cpu-")
        assert remote.infers == 1, "no request may be sent over a connection that failed verification"
        assert np.max(np.abs(via_tls - local)) <= 1e-5
        assert fallbacks(untrusting) >= 1
        azure = azure_status(untrusting)
        assert azure["breaker"] == "open" and "certificate" in azure["last_error"].lower(), azure
        # Its readiness probe fails the same way: the breaker stays open, requests stay local.
        time.sleep(0.6)
        assert post(untrusting, FIVE)[0].startswith("cpu-")
        assert azure_status(untrusting)["breaker"] == "open"
        assert post(trusting, FIVE)[0] == "azure"
    finally:
        trusting.stop()
        untrusting.stop()
        remote.close()


def test_a_bad_ca_file_stops_the_start_with_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello\n")
    with pytest.raises(RuntimeError, match="ca_file .*not-a-ca.pem.*no certificate"):
        start_b(tmp_path / "b", 9, url="https://127.0.0.1:9", ca_file=bad)


GRAPH_B_CONFIG = """
[[models]]
name = "minilm-graph"
path = "{onnx}"
[models.remote]
url = "http://127.0.0.1:{remote_port}"
model = "{model}"
token_env = "NNHOST_TEST_REMOTE_TOKEN"
connect_timeout_ms = 300
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


def test_a_bare_graph_routes_large_batches_to_the_remote(tmp_path):
    """A `kind = "graph"` model routes as an embedding model does, the batch being the
    first input's leading dimension: /v2 calls of 4 rows go to the remote, of 1 row stay
    local, and fall back to the CPU when the remote is gone."""
    port_a = free_port()
    a = start_a(tmp_path / "a", port_a)
    b = Server(GRAPH_B_CONFIG.format(onnx=MINILM / "onnx" / "model.onnx", remote_port=port_a, model=MODEL,
                                     router=ROUTER_WASM), tmp_path / "b", env={"NNHOST_TEST_REMOTE_TOKEN": "s3cret"})

    def infer(rows):
        ids = [[101, 7592, 2088, 102]] * rows
        inputs = [{"name": name, "datatype": "INT64", "shape": [rows, 4], "data": sum(data, [])}
                  for name, data in (("input_ids", ids), ("attention_mask", [[1] * 4] * rows),
                                     ("token_type_ids", [[0] * 4] * rows))]
        r = b.post("/v2/models/minilm-graph/infer", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        out = next(o for o in r.json()["outputs"] if o["name"] == "last_hidden_state")
        return r.headers["x-nnhost-provider"], np.array(out["data"]).reshape(out["shape"])

    try:
        provider, one = infer(1)
        assert provider.startswith("cpu-")
        provider, four = infer(4)
        assert provider == "azure"
        assert np.max(np.abs(four[0] - one[0])) <= 1e-4
        # A caller's bad tensor is answered before routing: the remote never sees it.
        bad = b.post("/v2/models/minilm-graph/infer", json={"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [4, 1], "data": [1, 2, 3, 4]}]})
        assert bad.status_code == 400 and "missing input" in bad.json()["error"]
        routing = b.get("/status").json()["models"][0]["routing"]
        azure = next(p for p in routing["providers"] if p["name"] == "azure")
        assert azure["requests"] == 1 and azure["errors"] == 0, azure

        a.stop()
        provider, four_local = infer(4)
        assert provider.startswith("cpu-")
        assert np.max(np.abs(four_local - four)) <= 1e-4
    finally:
        a.stop()
        b.stop()
