"""Scale-out: two nnhost replicas behind nginx (deploy/nginx/nnhost.conf as the
template). A steady stream of embedding requests goes through nginx from several
threads; one replica is killed with SIGKILL mid-way; no request may fail.

Needs /usr/sbin/nginx (`just scale-out-setup` installs Debian's nginx-light). Without
it the test is skipped, except under CI (`CI` set), where it fails instead.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, Server, free_port

NGINX = Path("/usr/sbin/nginx")
TEMPLATE = ROOT / "deploy" / "nginx" / "nnhost.conf"
OUT = ROOT / "tests" / "out"
MODEL = "all-MiniLM-L6-v2"

if not NGINX.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{NGINX} is missing: run `just scale-out-setup` (apt-get install nginx-light) first",
                    pytrace=False)
    pytestmark = pytest.mark.skip(reason=f"{NGINX} is missing (run `just scale-out-setup`); "
                                         "CI is not set, so the scale-out test is skipped")


def nginx_config(template: str, ports: list[int], listen: int, prefix: Path) -> str:
    """The deploy template with its upstream servers replaced by `ports` (keeping
    their parameters) and its listen port by `listen`, wrapped in a main config whose
    pid, logs and temp files live under `prefix`."""
    upstream = re.search(r"upstream\s+nnhost\s*\{(.*?)\n\}", template, re.S)
    assert upstream, "deploy/nginx/nnhost.conf has no `upstream nnhost { }` block"
    servers = re.findall(r"^([ \t]*)server[ \t]+\S+((?:[ \t]+[^;\s]+)*)[ \t]*;", upstream.group(1), re.M)
    assert servers, "the upstream block lists no server"
    indent, params = servers[0]
    lines = "".join(f"{indent}server 127.0.0.1:{p}{params};\n" for p in ports)
    server_line = re.compile(r"^[ \t]*server[ \t]+\S+(?:[ \t]+[^;\s]+)*[ \t]*;\n", re.M)
    # The replicas take the place of the first server line; the others go.
    matches = list(server_line.finditer(upstream.group(1)))
    body = upstream.group(1)
    for m in reversed(matches):
        body = body[:m.start()] + (lines if m is matches[0] else "") + body[m.end():]
    site = template.replace(upstream.group(1), body)
    site, n = re.subn(r"^([ \t]*)listen[ \t]+\d+[ \t]*;", rf"\g<1>listen 127.0.0.1:{listen};", site, count=1, flags=re.M)
    assert n == 1, "the server block has no `listen PORT;` line"
    temp = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                   for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 2;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} info;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log {prefix / 'access.log'} combined;\n{temp}\n{site}\n}}\n")


class Nginx:
    def __init__(self, config: str, prefix: Path, port: int):
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(config)
        self.prefix = prefix
        self.url = f"http://127.0.0.1:{port}"
        check = subprocess.run([str(NGINX), "-t", "-p", str(prefix), "-c", str(self.conf)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.log = open(prefix / "nginx.out", "wb")
        self.proc = subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(self.conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, (prefix / "error.log").read_text()
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not come up:\n" + (prefix / "error.log").read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def test_template_has_the_promised_settings():
    text = TEMPLATE.read_text()
    for needle in ["keepalive ", "max_fails=", "fail_timeout=", "non_idempotent", "http_502", "http_503",
                   "proxy_buffering off", "proxy_http_version 1.1", 'proxy_set_header Connection ""']:
        assert needle in text, needle
    assert re.search(r"proxy_next_upstream\s+error\s+timeout\s+http_502\s+http_503\s+non_idempotent;", text)


def test_killing_a_replica_loses_no_request(tmp_path):
    replicas = [Server(None, tmp_path / f"replica{i}") for i in range(2)]
    nginx = None
    try:
        port = free_port()
        config = nginx_config(TEMPLATE.read_text(), [r.port for r in replicas], port, tmp_path / "nginx")
        nginx = Nginx(config, tmp_path / "nginx", port)
        results: list[dict] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(worker: int):
            s = requests.Session()
            i = 0
            while not stop.is_set():
                i += 1
                started = time.time()
                try:
                    r = s.post(nginx.url + "/v1/embeddings", timeout=60, json={
                        "model": MODEL, "input": [f"worker {worker} request {i}", "a steady stream"]})
                    row = {"status": r.status_code, "upstream": r.headers.get("x-nnhost-upstream", ""),
                           "ok": r.status_code == 200 and len(r.json()["data"]) == 2,
                           "error": None if r.status_code == 200 else r.text[:300]}
                except Exception as e:  # noqa: BLE001 - a lost request is a failure
                    row = {"status": "lost", "upstream": "", "ok": False, "error": repr(e)[:300]}
                row.update(t=started, seconds=time.time() - started)
                with lock:
                    results.append(row)

        threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        time.sleep(4)
        killed = replicas[0]
        kill_time = time.time()
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(10)
        time.sleep(6)
        stop.set()
        for t in threads:
            t.join(60)

        failed = [r for r in results if not r["ok"]]
        before = [r for r in results if r["t"] < kill_time]
        after = [r for r in results if r["t"] >= kill_time]
        dead = f"127.0.0.1:{killed.port}"
        alive = f"127.0.0.1:{replicas[1].port}"
        retried = [r for r in results if "," in r["upstream"]]
        summary = {
            "replicas": 2, "client_threads": len(threads), "sent": len(results), "failed": len(failed),
            "sent_before_kill": len(before), "sent_after_kill": len(after),
            "served_by_killed_replica_before_kill": sum(1 for r in before if r["upstream"] == dead),
            "served_by_survivor": sum(1 for r in results if r["upstream"].endswith(alive)),
            "retried_on_the_other_replica": len(retried),
            "retried_examples": [r["upstream"] for r in retried[:5]],
            "p50_ms": round(1000 * sorted(r["seconds"] for r in results)[len(results) // 2], 1) if results else None,
            "max_ms": round(1000 * max(r["seconds"] for r in results), 1) if results else None,
            "failures": failed[:10],
        }
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "scale_out.json").write_text(json.dumps(summary, indent=1))

        assert not failed, json.dumps(summary, indent=1)
        assert len(before) > 20 and len(after) > 20, summary
        assert summary["served_by_killed_replica_before_kill"] > 0, "the load must have reached both replicas"
        late = [r for r in after if r["t"] > kill_time + 1]
        assert late and all(r["upstream"].split(", ")[-1] == alive for r in late), "after the kill only the survivor"
        assert replicas[1].proc.poll() is None
    finally:
        if nginx is not None:
            nginx.stop()
        for r in replicas:
            r.stop()
