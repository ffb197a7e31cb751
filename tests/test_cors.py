"""Browsers calling the API from another origin (`[server] cors_allow_origins`): the host answers
the preflight itself, before any key check (preflights carry none), marks the answers to allowed
origins and refuses other origins; the admin API never takes part."""
from __future__ import annotations

import hashlib

import pytest

from conftest import MINILM, ROUTER_WASM, Server

APP = "https://app.example.com"
ADMIN = "admin-secret"

CONFIG = """
[server]
cors_allow_origins = ["{app}"]

[[models]]
name = "all-MiniLM-L6-v2"
path = "{minilm}"

[[tenants]]
name = "keyed"
api_keys_sha256 = ["{key_sha}"]
component = "{router}"
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    text = CONFIG.format(app=APP, minilm=MINILM, router=ROUTER_WASM,
                         key_sha=hashlib.sha256(b"sk-web").hexdigest())
    srv = Server(text, tmp_path_factory.mktemp("cors"), env={"NNHOST_ADMIN_TOKEN": ADMIN})
    yield srv
    srv.stop()


def preflight(srv, path, origin, method="POST", headers="authorization,content-type"):
    return srv.session.options(srv.url + path, timeout=30, headers={
        "origin": origin, "access-control-request-method": method,
        "access-control-request-headers": headers})


def test_a_page_on_an_allowed_origin_calls_the_api_with_its_key(keyed):
    r = preflight(keyed, "/v1/embeddings", APP)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization,content-type"
    assert "origin" in r.headers["vary"].lower()

    r = keyed.session.post(keyed.url + "/v1/embeddings", timeout=60, json={"model": "all-MiniLM-L6-v2", "input": "hi"},
                           headers={"origin": APP, "authorization": "Bearer sk-web"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-expose-headers"] == "*"
    assert len(r.json()["data"][0]["embedding"]) == 384
    # Errors are readable by the page too (a missing key says so rather than a CORS failure).
    r = keyed.session.get(keyed.url + "/v1/models", timeout=30, headers={"origin": APP})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == APP
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_other_origins_and_the_admin_api_get_no_cors(keyed):
    r = preflight(keyed, "/v1/embeddings", "https://evil.example")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    r = keyed.session.get(keyed.url + "/v1/models", timeout=30,
                          headers={"origin": "https://evil.example", "authorization": "Bearer sk-web"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

    r = keyed.session.get(keyed.url + "/admin/tenants", timeout=30,
                          headers={"origin": APP, "authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert "access-control-allow-origin" not in r.headers
    assert preflight(keyed, "/admin/tenants", APP, method="DELETE").status_code != 204


def test_the_default_config_allows_pages_on_this_machine_only(default_server):
    r = preflight(default_server, "/v1/chat/completions", "http://localhost:5173")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    r = default_server.session.get(default_server.url + "/v1/models", timeout=30,
                                   headers={"origin": "http://127.0.0.1:3000"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert preflight(default_server, "/v1/chat/completions", "https://example.com").status_code == 403
    assert preflight(default_server, "/v1/chat/completions", "http://localhost.example.com").status_code == 403
