"""Process lifecycle: SIGTERM lets requests in flight finish, refuses new ones, and
exits within the grace period."""
from __future__ import annotations

import json
import re
import signal
import threading
import time

import requests

from conftest import MINILM, ROUTER_WASM, SMOLLM, Server

CONFIG = """
[server]
shutdown_grace_ms = 20000

[[models]]
name = "all-MiniLM-L6-v2"
path = "{minilm}"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""


def test_sigterm_finishes_requests_in_flight(tmp_path):
    server = Server(CONFIG.format(minilm=MINILM, router=ROUTER_WASM), tmp_path)
    texts = [f"sentence {i} about a long day at the office, with meetings and coffee" for i in range(2048)]
    result = {}

    def slow():
        r = requests.post(server.url + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts},
                          timeout=120)
        result["status"] = r.status_code
        result["count"] = len(r.json()["data"]) if r.status_code == 200 else 0

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.5)
    started = time.time()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        requests.get(server.url + "/health", timeout=2)
        refused = False
    except requests.ConnectionError:
        refused = True
    worker.join()
    code = server.proc.wait(30)
    server.stop()
    assert result == {"status": 200, "count": 2048}, result
    assert refused, "new connections must be refused once shutdown has begun"
    assert code == 0
    assert time.time() - started < 25
    assert "shutting down" in server.log_path.read_text()


def test_past_capacity_generations_get_429_with_retry_after(tmp_path):
    """A model's generations are bounded (max_generations); past the bound a tenant
    gets 429, except one holding less than an equal share of them, so one tenant's
    flood does not lock the others out."""
    from conftest import SMOLLM

    config = f"""
[[models]]
name = "smollm2-135m-instruct"
path = "{SMOLLM}"
[models.batching]
max_generations = 2

[[tenants]]
name = "default"
public = true
component = "{ROUTER_WASM}"

[[tenants]]
name = "other"
api_keys = ["sk-other"]
component = "{ROUTER_WASM}"
"""
    server = Server(config, tmp_path)
    try:
        # The stop tokens (<|endoftext|> 0, <|im_end|> 2) banned: the first generation must still be
        # running when the second request comes (a sampled early stop once freed the slot first).
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 400, "stream": True, "logit_bias": {"0": -100, "2": -100}}
        streams, readers = [], []
        for _ in range(2):
            streams.append(requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60))
            assert streams[-1].status_code == 200
            # Kept: a line iterator that is dropped closes the connection (urllib3 closes a
            # chunked response whose read is abandoned), which ends the generation.
            readers.append(streams[-1].iter_lines())
            next(readers[-1])
        third = requests.post(server.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=60)
        assert third.status_code == 429, third.text
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "server_busy"
        # The other tenant holds none of the two: it may have one (an equal share).
        other = requests.post(server.url + "/v1/chat/completions", timeout=60,
                              headers={"authorization": "Bearer sk-other"},
                              json={**body, "stream": False, "max_tokens": 4})
        assert other.status_code == 200, other.text
        assert other.json()["usage"]["completion_tokens"] == 4
        for stream in streams:
            stream.close()
        # Once the first generation is gone, the slot is free again.
        deadline = time.time() + 20
        while time.time() < deadline:
            r = requests.post(server.url + "/v1/chat/completions",
                              json={**body, "stream": False, "max_tokens": 4}, timeout=60)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        # A finished generation gives its place back before its client hears the end:
        # one client asking again at once, two at a time, is never refused.
        answers = []

        def ask_in_turn():
            for _ in range(8):
                answers.append(requests.post(server.url + "/v1/chat/completions",
                                             json={**body, "stream": False, "max_tokens": 1}, timeout=60))
        pair = [threading.Thread(target=ask_in_turn) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers if a.status_code != 200]
    finally:
        server.stop()


GENERATING = """
[server]
shutdown_grace_ms = 300

[[models]]
name = "smollm2"
path = "{smollm}"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""


def test_a_generation_outliving_the_grace_period_ends_cleanly(tmp_path):
    """A generation still decoding when the grace period is over is ended by its worker
    ("the server is shutting down") before ONNX Runtime is torn down: no graph step is
    cut short at exit (which logged ORT's "GetElementType is not implemented")."""
    server = Server(GENERATING.format(smollm=SMOLLM, router=ROUTER_WASM), tmp_path)

    def generate():
        try:
            requests.post(server.url + "/v1/completions", timeout=60, json={
                "model": "smollm2", "prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0})
        except requests.ConnectionError:
            pass

    client = threading.Thread(target=generate)
    client.start()
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(30)
    client.join()
    server.stop()
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text())
    assert code == 0
    assert "grace period over" in log
    assert "GetElementType" not in log and "decode batch failed" not in log, log[-2000:]
    assert "generation finished" in log and "reason=Error" in log, log[-2000:]


def test_a_generation_reaching_the_time_limit_returns_its_text(tmp_path):
    """A generation still running near the tenant's request time limit ends as `max_tokens`
    would (finish_reason "length", the text so far, its usage) a little before the limit,
    instead of the request being cut off with a 504 and the text lost."""
    config = f"""
[[models]]
name = "smollm2-135m-instruct"
path = "{SMOLLM}"

[[tenants]]
name = "default"
public = true
component = "{ROUTER_WASM}"
[tenants.limits]
request_timeout_ms = 3000
"""
    server = Server(config, tmp_path)
    try:
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 4000, "temperature": 0, "logit_bias": {"0": -100, "2": -100}}
        started = time.time()
        r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        elapsed = time.time() - started
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["choices"][0]["finish_reason"] == "length"
        assert 10 < done["usage"]["completion_tokens"] < 4000
        assert len(done["choices"][0]["message"]["content"]) > 20
        assert elapsed < 3.0, elapsed

        r = requests.post(server.url + "/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=30)
        events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"][0]["finish_reason"] == "length", last
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                       if json.loads(e)["choices"])
        assert len(text) > 20
        assert "generation cancelled" in server.log_once(lambda log: "generation cancelled" in log)
    finally:
        server.stop()
