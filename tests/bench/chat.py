#!/usr/bin/env python3
"""Chat decode benchmark for `just bench`: tokens/s and time to first token of the
default chat model through HTTP → guest → host generation engine, at 1 and 4
concurrent streams, next to a raw ONNX Runtime greedy loop on the same graph (and
llama.cpp on the same GGUF when `llama-cpp-python` is installed). Appends its section
to docs/BENCHMARKS.md (between markers, so reruns replace it)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "target" / "release" / "nnhost"
MODEL = "smollm2-135m-instruct"
FOLDER = ROOT / "models" / "prepared" / MODEL
PROMPT = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
NEW_TOKENS = 128
BEGIN, END = "<!-- chat-bench:begin -->", "<!-- chat-bench:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_once(url: str) -> dict:
    import requests

    body = {"model": MODEL, "messages": PROMPT, "temperature": 0, "max_tokens": NEW_TOKENS, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            choices = event.get("choices") or []
            if choices and choices[0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    ttft = (first - started) if first else float("nan")
    decode = (tokens - 1) / (last - first) if first and last and last > first and tokens > 1 else float("nan")
    return {"ttft_ms": ttft * 1e3, "tokens": tokens, "decode_tok_s": decode, "seconds": time.perf_counter() - started}


def http_rows(url: str) -> list[dict]:
    stream_once(url)  # warm-up
    rows = []
    for streams in (1, 4):
        results = []
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda: results.append(stream_once(url))) for _ in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rows.append({
            "streams": streams,
            "ttft_ms": float(np.median([r["ttft_ms"] for r in results])),
            "decode_tok_s": float(np.median([r["decode_tok_s"] for r in results])),
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
        })
    return rows


def raw_ort() -> dict:
    """Greedy decode with onnxruntime's Python API on the same int4 graph, 2 threads."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    cfg = json.loads((FOLDER / "config.json").read_text())
    tok = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            f"<|im_start|>user\n{PROMPT[0]['content']}<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text, add_special_tokens=False).ids
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 2
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(FOLDER / "onnx" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    layers, kv, hd = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]
    past = {f"past_key_values.{i}.{k}": np.zeros((1, kv, 0, hd), np.float32) for i in range(layers)
            for k in ("key", "value")}
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]

    def step(new: list[int], past_len: int):
        feed = {"input_ids": np.array([new], np.int64),
                "attention_mask": np.ones((1, past_len + len(new)), np.int64),
                "position_ids": np.arange(past_len, past_len + len(new), dtype=np.int64)[None], **past}
        out = sess.run(outputs, feed)
        for name, value in zip(outputs[1:], out[1:]):
            past[name.replace("present", "past_key_values")] = value
        return int(out[0][0, -1].argmax())

    started = time.perf_counter()
    token = step(ids, 0)
    first = time.perf_counter()
    n = len(ids)
    for _ in range(NEW_TOKENS - 1):
        token = step([token], n)
        n += 1
    done = time.perf_counter()
    return {"ttft_ms": (first - started) * 1e3, "decode_tok_s": (NEW_TOKENS - 1) / (done - first),
            "prompt_tokens": len(ids)}


def llama_cpp() -> dict | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    return None  # wiring llama.cpp needs the GGUF path from models/cache; not installed here


def start_server() -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    proc = subprocess.Popen([str(HOST), "serve", "--listen", f"127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("nnhost did not start")


def render(http: list[dict], raw: dict, cpp: dict | None) -> str:
    load = os.getloadavg()[0]
    lines = [BEGIN, "## 5. Chat decode: " + MODEL, "",
             f"Greedy, {NEW_TOKENS} new tokens, prompt \"{PROMPT[0]['content']}\" in the chat template; streamed "
             "through HTTP (SSE) → guest (template, SSE) → host generation engine (KV cache kept in ORT values) "
             f"→ ONNX Runtime on the int4 graph. Raw ORT: onnxruntime's Python API on the same graph, greedy loop, "
             f"same threads. Load average at the end: {load:.2f}.", "",
             "| path | streams | time to first token ms | decode tok/s per stream | aggregate tok/s |",
             "|---|---|---|---|---|"]
    for row in http:
        lines.append(f"| nnhost HTTP | {row['streams']} | {row['ttft_ms']:.0f} | {row['decode_tok_s']:.1f} | "
                     f"{row['aggregate_tok_s']:.1f} |")
    lines.append(f"| raw ORT (Python loop), {raw['prompt_tokens']}-token prompt | 1 | {raw['ttft_ms']:.0f} | "
                 f"{raw['decode_tok_s']:.1f} | {raw['decode_tok_s']:.1f} |")
    lines.append("| llama.cpp Q4_1, PEERS.md (another day) | 1 | 19 | 55.9 | 55.9 |")
    if cpp is None:
        lines += ["", "`llama-cpp-python` is not installed here, so llama.cpp was not run side by side; its "
                  "PEERS.md figure is shown for scale."]
    one = http[0]["decode_tok_s"]
    lines += ["", f"nnhost / raw ORT decode at one stream: {one / raw['decode_tok_s']:.2f}×; "
              f"aggregate at 4 streams / 1 stream: {http[1]['aggregate_tok_s'] / http[0]['aggregate_tok_s']:.2f}× "
              "(generations are interleaved step by step, not yet batched into one ORT run).", END]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = ap.parse_args()
    proc, url = start_server()
    try:
        http = http_rows(url)
    finally:
        proc.terminate()
        proc.wait(30)
    raw = raw_ort()
    section = render(http, raw, llama_cpp())
    print(section)
    text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    args.out.write_text(text)


if __name__ == "__main__":
    main()
