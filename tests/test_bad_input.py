"""Malformed and abusive requests against the real server, table-driven.

Every row is sent byte for byte over a raw socket (no client library normalises the
path, the headers or the body) and must get its expected status, never a 5xx, with
OpenAI's error shape (`{"error":{"message","type","param","code"}}`; `/v2` answers
`{"error": "..."}`). Afterwards the server must still be healthy and serve a valid
embedding. The table with each answer's status and error message is written to
`tests/out/bad_input.json` (summarised in docs/RELIABILITY.md).

Rows whose expected answer the host does not give yet are marked
`xfail(strict=True)` with the bug in the reason: the suite stays green, the bug stays
visible, and the mark must go once the bug is fixed.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections import Counter

import pytest

from bad_input_table import CASES, EMB, MINILM, UNSET, Case
from conftest import ROOT

OUT = ROOT / "tests" / "out"

assert len({c.name for c in CASES}) == len(CASES), "row names must be unique"


def _head(case: Case, body: bytes | None) -> bytes:
    if case.raw_head is not None:
        return case.raw_head
    version = "HTTP/1.0" if case.http10 else "HTTP/1.1"
    lines = [f"{case.method} {case.path} {version}".encode(), b"host: 127.0.0.1"]
    headers = dict(case.headers or {})
    if isinstance(case.body, (dict, list)) and not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = "application/json"
    for k, v in headers.items():
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode("latin-1")))
    if body is not None:
        lines.append(b"transfer-encoding: chunked" if case.chunked else f"content-length: {len(body)}".encode())
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n"


def send(url: str, case: Case) -> tuple[int, dict, bytes]:
    """One request on a fresh connection, bytes as written; returns status, headers, body.
    The body is sent in pieces and a failed send (the server answered early, e.g. 413,
    and closed) still reads the answer, as HTTP clients do."""
    host, port = url.removeprefix("http://").split(":")
    body = case.body_bytes()
    sock = socket.create_connection((host, int(port)), timeout=120)
    try:
        payload = _head(case, body) + b"\r\n"
        if body is not None:
            if case.chunked:
                step = 64 * 1024
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    payload += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                payload += b"0\r\n\r\n"
            else:
                payload += body
        try:
            for i in range(0, len(payload), 256 * 1024):
                sock.sendall(payload[i:i + 256 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock, method=case.method)
        response.begin()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        sock.close()


def check_shape(case: Case, headers: dict, data: bytes) -> str | None:
    """The error message, after checking the error body's shape."""
    shape = case.expected_shape()
    if shape is None:
        return None
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(data)
    if shape == "v2":
        assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
        return doc["error"]
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if case.param is not UNSET:
        assert err["param"] == case.param, err
    return err["message"]


@pytest.fixture(scope="module")
def results(server):
    rows: list[dict] = []
    yield rows
    OUT.mkdir(parents=True, exist_ok=True)
    statuses = Counter(str(r["status"]) for r in rows)
    summary = {
        "rows_in_table": len(CASES),
        "sent": len(rows),
        "as_expected": sum(r["as_expected"] for r in rows),
        "known_bugs_xfail": sum(1 for r in rows if r["xfail"]),
        "server_errors_5xx": sum(1 for r in rows if isinstance(r["status"], int) and r["status"] >= 500),
        "statuses": dict(sorted(statuses.items())),
    }
    (OUT / "bad_input.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


def _describe_body(case: Case) -> dict:
    body = case.body_bytes()
    if body is None:
        return {"body_bytes": 0, "body_preview": None}
    preview = body[:160].decode("utf-8", errors="backslashreplace")
    return {"body_bytes": len(body), "body_preview": preview + ("…" if len(body) > 160 else "")}


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else []
        yield pytest.param(c, id=c.name, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(server, results, served_models, case: Case):
    missing = [m for m in case.needs if m not in served_models]
    if missing:
        pytest.skip(f"needs {missing} (not served by this test server)")
    started = time.time()
    row = {"name": case.name, "method": case.method, "path": case.path[:200],
           "headers": {k: (v if isinstance(v, str) else repr(v))[:80] for k, v in (case.headers or {}).items()}
           if case.headers and len(case.headers) < 10 else f"{len(case.headers or {})} headers",
           **_describe_body(case), "expected": case.status, "xfail": case.xfail}
    try:
        status, headers, data = send(server.url, case)
    except Exception as e:  # recorded, then re-raised: a lost answer is a failure
        row.update(status=f"no answer: {e!r}", as_expected=False, message=None)
        results.append(row)
        raise
    row.update(status=status, seconds=round(time.time() - started, 3),
               message=None, as_expected=False)
    results.append(row)
    try:
        row["message"] = _message(data)
    except Exception:
        row["message"] = data[:300].decode("utf-8", errors="backslashreplace") or None
    assert status < 500, f"{case.name}: {status} {data[:500]!r}"
    assert status == case.status, f"{case.name}: expected {case.status}, got {status}: {data[:500]!r}"
    check_shape(case, headers, data)
    row["as_expected"] = True


def _message(data: bytes) -> str | None:
    if not data:
        return None
    doc = json.loads(data)
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return doc["error"].get("message")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return None


@pytest.fixture(scope="module")
def served_models(server) -> set[str]:
    return {m["id"] for m in server.get("/v1/models").json()["data"]}


def test_table_is_large_enough():
    assert len(CASES) >= 60


def test_server_is_healthy_afterwards(server, results):
    """Runs after the table (file order): the process is alive and serves."""
    assert server.proc.poll() is None, server.log_text()
    assert server.get("/health").status_code == 200
    assert server.get("/ready").status_code == 200
    r = server.post(EMB, {"model": MINILM, "input": ["still serving", "after the abuse"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    assert "panicked" not in server.log_text()


def test_openai_sdk_placeholder_key_reaches_the_public_tenant(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert MINILM in {m.id for m in client.models.list()}


def _curl_head(url: str, http2: bool) -> tuple[int, dict]:
    """HEAD through curl, the one HTTP/2 client at hand; curl fails (exit 16 or 92) on a
    HEAD response that carries DATA frames, a protocol error in HTTP/2."""
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing (apt-get install curl)")
        pytest.skip("curl is missing")
    version = "--http2-prior-knowledge" if http2 else "--http1.1"
    out = subprocess.run([curl, "-sS", "-I", version, "--max-time", "30", url],
                         capture_output=True, text=True)
    assert out.returncode == 0, (url, http2, out.stderr)
    lines = out.stdout.replace("\r", "").strip().split("\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers


def test_head_answers_like_get_without_a_body(server):
    """HEAD is GET without the body (RFC 9110), on the host's routes and a guest's, over
    HTTP/1.1 and HTTP/2."""
    for path in ("/health", "/v1/models", "/"):
        get = server.get(path)
        for http2 in (False, True):
            status, headers = _curl_head(server.url + path, http2)
            assert status == 200, (path, http2)
            assert headers["content-type"] == get.headers["content-type"]
            if path != "/v1/models":  # the model list's `created` may tick between the two
                assert int(headers["content-length"]) == len(get.content), (path, http2)


def test_gzip_and_deflate_request_bodies_are_decoded(server):
    import gzip
    import zlib

    body = json.dumps({"model": MINILM, "input": ["compressed upload"] * 3}).encode()
    plain = server.post(EMB, json=json.loads(body)).json()["data"]
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        r = server.post(EMB, data=packed, headers={"content-encoding": encoding, "content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert [d["embedding"] for d in r.json()["data"]] == [d["embedding"] for d in plain]
