"""Each tenant's key-value store on the host (what stored responses and chat completions live in): private to the
tenant, bounded by its `store_bytes` (the oldest entries make room), off at 0, visible to operators."""
from __future__ import annotations

import pytest

from conftest import ROUTER_WASM, SMOLLM, Server

ADMIN = "admin-secret"
CHAT = "smollm2-135m-instruct"
CONFIG = """
[[models]]
name = "{chat}"
path = "{smollm}"

[[models]]
name = "short"
path = "{smollm}"
max_tokens = 24

[[tenants]]
name = "ample"
api_keys = ["sk-ample"]
component = "{router}"

[[tenants]]
name = "tiny"
api_keys = ["sk-tiny"]
component = "{router}"
[tenants.limits]
store_bytes = 6000

[[tenants]]
name = "none"
api_keys = ["sk-none"]
component = "{router}"
[tenants.limits]
store_bytes = 0
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG.format(chat=CHAT, smollm=SMOLLM, router=ROUTER_WASM), tmp_path_factory.mktemp("store"),
                 env={"NNHOST_ADMIN_TOKEN": ADMIN})
    yield srv
    srv.stop()


def respond(host, key, **body):
    r = host.session.post(host.url + "/v1/responses", headers={"authorization": f"Bearer {key}"}, timeout=120,
                          json={"model": CHAT, "temperature": 0, "max_output_tokens": 8, **body})
    assert r.status_code == 200, r.text
    return r.json()


def fetch(host, key, rid):
    return host.session.get(f"{host.url}/v1/responses/{rid}", headers={"authorization": f"Bearer {key}"},
                            timeout=60)


def test_a_tenants_responses_are_its_own(host):
    r = respond(host, "sk-ample", input="Hello there")
    assert r["store"] is True
    assert fetch(host, "sk-ample", r["id"]).status_code == 200
    other = fetch(host, "sk-tiny", r["id"])
    assert other.status_code == 404 and other.json()["error"]["code"] == "response_not_found"
    r2 = host.session.post(host.url + "/v1/responses", headers={"authorization": "Bearer sk-tiny"}, timeout=60,
                           json={"model": CHAT, "input": "Hi", "previous_response_id": r["id"]})
    assert r2.status_code == 404 and r2.json()["error"]["param"] == "previous_response_id"


def test_a_tenants_stored_chat_completions_are_its_own(host):
    def call(method, key, path, **kw):
        return host.session.request(method, host.url + path, headers={"authorization": f"Bearer {key}"},
                                    timeout=120, **kw)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "store": True}
    made = call("POST", "sk-ample", "/v1/chat/completions", json=body).json()
    assert call("GET", "sk-ample", f"/v1/chat/completions/{made['id']}").json()["id"] == made["id"]
    assert made["id"] in [c["id"] for c in call("GET", "sk-ample", "/v1/chat/completions").json()["data"]]
    for method in ("GET", "DELETE"):
        assert call(method, "sk-tiny", f"/v1/chat/completions/{made['id']}").status_code == 404
    assert made["id"] not in [c["id"] for c in call("GET", "sk-tiny", "/v1/chat/completions").json()["data"]]
    # A tenant without a store is answered all the same; nothing is kept.
    r = call("POST", "sk-none", "/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.json()["choices"], r.text
    assert call("GET", "sk-none", f"/v1/chat/completions/{r.json()['id']}").status_code == 404
    assert call("GET", "sk-none", "/v1/chat/completions").json()["data"] == []


def test_the_oldest_responses_make_room(host):
    ids = [respond(host, "sk-tiny", input=f"Count to {i}.")["id"] for i in range(6)]
    kept = [fetch(host, "sk-tiny", rid).status_code for rid in ids]
    assert kept[-1] == 200 and kept[0] == 404, kept
    assert kept == sorted(kept, reverse=True), kept   # evicted oldest first
    tenants = host.session.get(host.url + "/admin/tenants", headers={"authorization": f"Bearer {ADMIN}"},
                               timeout=30).json()
    tiny = next(t for t in (tenants["tenants"] if isinstance(tenants, dict) else tenants) if t["name"] == "tiny")
    assert 0 < tiny["store"]["bytes"] <= 6000 and tiny["store"]["entries"] == kept.count(200)
    metrics = host.session.get(host.url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"},
                               timeout=30).text
    line = next(l for l in metrics.splitlines() if l.startswith('nnhost_tenant_store_bytes{tenant="tiny"}'))
    assert int(line.split()[-1]) == tiny["store"]["bytes"]


def test_a_tenant_without_a_store_is_still_answered(host):
    r = respond(host, "sk-none", input="Hello there")
    assert r["store"] is False and r["output"]
    assert fetch(host, "sk-none", r["id"]).status_code == 404
    streamed = host.session.post(host.url + "/v1/responses", headers={"authorization": "Bearer sk-none"},
                                 timeout=60, json={"model": CHAT, "input": "Hi", "stream": True,
                                                   "max_output_tokens": 4})
    assert streamed.status_code == 200 and '"store":false' in streamed.text


def test_a_prompt_may_fill_the_context_when_it_is_only_scored(host):
    """(Here for its small-context model.) Scoring needs no room after the prompt; generating does."""
    ids = list(range(1000, 1024))
    def complete(**body):
        return host.session.post(host.url + "/v1/completions", headers={"authorization": "Bearer sk-ample"},
                                 timeout=60, json={"model": "short", "prompt": ids, **body})
    r = complete(echo=True, logprobs=0, max_tokens=0)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][0]["logprobs"]["tokens"]) == 24
    r = complete(echo=True, logprobs=0, max_tokens=1)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
