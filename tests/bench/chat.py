#!/usr/bin/env python3
"""Chat decode benchmark for `just bench`: tokens/s and time to first token of the
chat/completion models through HTTP → guest → host generation engine, at 1 and 4
concurrent streams, next to a raw ONNX Runtime greedy loop on the same naive graph and
llama.cpp (through `llama-cpp-python`, when it is importable; `just bench-peers` installs
it) on the very GGUF file each model was prepared from. The paths are measured
interleaved, round by round, so the ratios come from one sitting. Appends its section to
docs/BENCHMARKS.md (between markers, so reruns replace it)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_cpp_peer import LlamaCpp, llama_cpp_version

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "target" / "release" / "nnhost"
NEW_TOKENS = 128
THREADS = 2
BEGIN, END = "<!-- chat-bench:begin -->", "<!-- chat-bench:end -->"

STORY = "Write a long story about a robot who learns to paint."
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True)
class Model:
    name: str
    chat: bool   # True: /v1/chat/completions with `messages`; False: /v1/completions with `prompt`
    prompt: str  # the user message (chat) or the raw prompt (completion)
    text: str    # the exact text the model sees (chat template applied), for raw ORT and llama.cpp
    bos: bool    # whether the tokenizer adds BOS to `text` (the host does for completion prompts)

    @property
    def folder(self) -> Path:
        return ROOT / "models" / "prepared" / self.name


MODELS = {
    # The default chat model; the text is the GGUF's ChatML template with its default system prompt.
    "smollm2-135m-instruct": Model(
        "smollm2-135m-instruct", True, STORY,
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n{STORY}<|im_end|>\n<|im_start|>assistant\n",
        False),
    # A base model served for /v1/completions: a story opening it continues for 128 tokens.
    "gemma-3-270m": Model(
        "gemma-3-270m", False, "Once upon a time, in a small town by the sea, there lived a robot who wanted to "
        "learn to paint.", "Once upon a time, in a small town by the sea, there lived a robot who wanted to "
        "learn to paint.", True),
}


# Suffix of the model names under which the bench serves the fused graphs (variant int4-fused).
FUSED = "-fused"
# Suffix of the model names served with prefill_chunk_tokens = 0 (a prompt prefilled in one piece).
WHOLE = "-whole-prefill"
# Suffix of the model names served without the prefix cache: the decode table's requests repeat one
# prompt, and llama.cpp's rows prefill it every time (`reset()`), so nnhost's do too.
COLD = "-cold"
# Suffix of the cold models served without speculative decoding (`speculative_tokens = 0`): one token per step.
NO_DRAFTS = "-no-drafts"
LONG_PROMPT = ("In the year 1852, the town of Millbrook was a quiet place where farmers brought their grain "
               "to the mill by the river. ") * 55  # ~1500 tokens


def fused(m: Model) -> Model:
    return dataclasses.replace(m, name=m.name + FUSED)


def cold(m: Model) -> Model:
    return dataclasses.replace(m, name=m.name + COLD)


def no_drafts(m: Model) -> Model:
    return dataclasses.replace(m, name=m.name + NO_DRAFTS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- nnhost over HTTP


def sse_events(url: str, body: dict):
    """The JSON events of a streamed (SSE) request, as they arrive."""
    import requests

    with requests.post(url, json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


def stream_once(url: str, model: Model) -> dict:
    body = {"model": model.name, "temperature": 0, "max_tokens": NEW_TOKENS, "stream": True,
            "stream_options": {"include_usage": True}}
    if model.chat:
        body["messages"] = [{"role": "user", "content": model.prompt}]
        route = "/v1/chat/completions"
    else:
        body["prompt"] = model.prompt
        route = "/v1/completions"
    started = time.perf_counter()
    first = last = None
    tokens = prompt_tokens = 0
    for event in sse_events(url + route, body):
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
            prompt_tokens = event["usage"].get("prompt_tokens", 0)
        choices = event.get("choices") or []
        if choices and (choices[0].get("delta", {}).get("content") or choices[0].get("text")):
            now = time.perf_counter()
            first = first or now
            last = now
    ttft = (first - started) if first else float("nan")
    decode = (tokens - 1) / (last - first) if first and last and last > first and tokens > 1 else float("nan")
    return {"ttft_ms": ttft * 1e3, "tokens": tokens, "prompt_tokens": prompt_tokens, "decode_tok_s": decode,
            "seconds": time.perf_counter() - started}


def http_streams(url: str, model: Model, streams: int) -> dict:
    results: list[dict] = []
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(stream_once(url, model))) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"ttft_ms": float(np.median([r["ttft_ms"] for r in results])),
            "decode_tok_s": float(np.median([r["decode_tok_s"] for r in results])),
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
            "tokens": min(r["tokens"] for r in results),
            "prompt_tokens": results[0]["prompt_tokens"]}


def long_prompt_joins(url: str, model_name: str) -> dict:
    """One stream decoding; 0.5 s in, a ~1500-token prompt arrives (one token asked). The
    stream's gaps between tokens while that prompt is prefilled, and the prompt's latency."""
    import requests

    gaps: list[float] = []

    def stream() -> None:
        body = {"model": model_name, "prompt": "Once upon a time, in a small village,", "temperature": 0,
                "max_tokens": 2 * NEW_TOKENS + 256, "stream": True}
        with requests.post(url + "/v1/completions", json=body, stream=True, timeout=300) as r:
            r.raise_for_status()
            last = None
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data: ") and line != "data: [DONE]":
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    started = time.perf_counter()
    r = requests.post(url + "/v1/completions", timeout=300,
                      json={"model": model_name, "prompt": LONG_PROMPT, "max_tokens": 1, "temperature": 0})
    r.raise_for_status()
    took = time.perf_counter() - started
    t.join()
    return {"prompt_tokens": r.json()["usage"]["prompt_tokens"], "long_ms": took * 1e3,
            "gap_p50_ms": float(np.median(gaps)) * 1e3, "gap_max_ms": max(gaps) * 1e3}


def start_server() -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    # The embedded default config plus each decoder's fused variant under "<name>-fused".
    config = subprocess.run([str(HOST), "default-config"], check=True, capture_output=True, text=True).stdout
    for m in MODELS.values():
        config += (f'\n[[models]]\nname = "{m.name}{FUSED}"\npath = "models/prepared/{m.name}"\n'
                   f'onnx = "onnx/model_fused.onnx"\nbatching = {{ prefix_cache_mib = 0 }}\n')
        config += (f'\n[[models]]\nname = "{m.name}{WHOLE}"\npath = "models/prepared/{m.name}"\n'
                   f'batching = {{ prefill_chunk_tokens = 0, prefix_cache_mib = 0, speculative_tokens = 0 }}\n')
        config += (f'\n[[models]]\nname = "{m.name}{COLD}"\npath = "models/prepared/{m.name}"\n'
                   f'batching = {{ prefix_cache_mib = 0 }}\n')
        config += (f'\n[[models]]\nname = "{m.name}{NO_DRAFTS}"\npath = "models/prepared/{m.name}"\n'
                   f'batching = {{ prefix_cache_mib = 0, speculative_tokens = 0 }}\n')
    config_path = Path(tempfile.mkdtemp()) / "nnhost.toml"
    config_path.write_text(config)
    proc = subprocess.Popen([str(HOST), "serve", "--listen", f"127.0.0.1:{port}", "--config", str(config_path)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("nnhost did not start")


# ---------------------------------------------------------------- raw ONNX Runtime


class RawOrt:
    """Greedy decode with onnxruntime's Python API on the naive int4 graph (onnx/model.onnx), 2 threads."""

    def __init__(self, model: Model):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = model.folder
        cfg = json.loads((folder / "config.json").read_text())
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.ids = tok.encode(model.text, add_special_tokens=model.bos).ids
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), options,
                                         providers=["CPUExecutionProvider"])
        self.layers, self.kv, self.hd = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]
        self.outputs = ["logits"] + [f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    def run(self) -> dict:
        past = {f"past_key_values.{i}.{k}": np.zeros((1, self.kv, 0, self.hd), np.float32)
                for i in range(self.layers) for k in ("key", "value")}

        def step(new: list[int], past_len: int) -> int:
            feed = {"input_ids": np.array([new], np.int64),
                    "attention_mask": np.ones((1, past_len + len(new)), np.int64),
                    "position_ids": np.arange(past_len, past_len + len(new), dtype=np.int64)[None], **past}
            out = self.sess.run(self.outputs, feed)
            for name, value in zip(self.outputs[1:], out[1:]):
                past[name.replace("present", "past_key_values")] = value
            return int(out[0][0, -1].argmax())

        ids = self.ids
        started = time.perf_counter()
        token = step(ids, 0)
        first = time.perf_counter()
        n = len(ids)
        for _ in range(NEW_TOKENS - 1):
            token = step([token], n)
            n += 1
        done = time.perf_counter()
        rate = (NEW_TOKENS - 1) / (done - first)
        return {"ttft_ms": (first - started) * 1e3, "decode_tok_s": rate, "aggregate_tok_s": rate,
                "tokens": NEW_TOKENS, "prompt_tokens": len(ids)}


# ---------------------------------------------------------------- llama.cpp (llama-cpp-python)


def llama_cpp_probe(models: list[Model]) -> str | None:
    """Why llama.cpp cannot run here, or None. Its native code can crash the process outright
    (seen: a segmentation fault in llama_decode with a -march=native build on an AVX-512/AMX Xeon),
    so one short generation per model, 1 and 4 streams, runs first in a child process."""
    for m in models:
        try:
            child = subprocess.run([sys.executable, __file__, "--probe-llama-cpp", m.name],
                                   capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return f"a probe generation with {m.name} did not finish within 600 s"
        if child.returncode < 0:  # llama.cpp's log lines say nothing of where it crashed
            return f"a probe generation with {m.name} was killed by signal {-child.returncode}"
        if child.returncode != 0:  # a Python exception: its last line says what
            tail = (child.stderr.strip().splitlines() or [""])[-1][:200]
            return f"a probe generation with {m.name} exited with {child.returncode}: {tail}"
    return None


def probe_llama_cpp(name: str) -> None:
    cpp = LlamaCpp(MODELS[name], NEW_TOKENS, THREADS)
    cpp.run()
    cpp.run_multi()


# ---------------------------------------------------------------- the sitting


def median_row(runs: list[dict]) -> dict:
    return {k: float(statistics.median(r[k] for r in runs)) for k in runs[0]}


def measure(url: str, models: list[Model], rounds: int, with_cpp: bool) -> dict:
    """{model: {(path, streams): median row}}, the paths interleaved within every round."""
    setups: dict[str, dict] = {}
    for m in models:
        raw = RawOrt(m)
        cpp = LlamaCpp(m, NEW_TOKENS, THREADS) if with_cpp else None
        stream_once(url, cold(m))  # warm-ups
        stream_once(url, no_drafts(m))
        stream_once(url, fused(m))
        raw.run()
        if cpp:
            cpp.run()
            cpp.run_multi()
        setups[m.name] = {"raw": raw, "cpp": cpp}
    runs: dict[str, dict[tuple[str, int], list[dict]]] = {m.name: {} for m in models}
    for r in range(rounds):
        for m in models:
            raw, cpp = setups[m.name]["raw"], setups[m.name]["cpp"]
            steps = [(("nnhost", 1), lambda: http_streams(url, cold(m), 1)),
                     (("nnhost", 4), lambda: http_streams(url, cold(m), 4)),
                     (("nodraft", 1), lambda: http_streams(url, no_drafts(m), 1)),
                     (("nodraft", 4), lambda: http_streams(url, no_drafts(m), 4)),
                     (("fused", 1), lambda: http_streams(url, fused(m), 1)),
                     (("fused", 4), lambda: http_streams(url, fused(m), 4)),
                     (("raw", 1), raw.run)]
            if cpp:
                steps += [(("cpp", 1), cpp.run)]
                if cpp.multi:
                    steps += [(("cpp", 4), cpp.run_multi)]
            if r % 2:  # alternate the order between rounds
                steps.reverse()
            for key, fn in steps:
                runs[m.name].setdefault(key, []).append(fn())
            print(f"round {r + 1}/{rounds} {m.name}: " + ", ".join(
                f"{k[0]}×{k[1]} {v[-1]['decode_tok_s']:.1f} tok/s {v[-1]['ttft_ms']:.0f} ms"
                for k, v in runs[m.name].items()), file=sys.stderr, flush=True)
    notes = {m.name: getattr(setups[m.name]["cpp"], "multi_error", None) for m in models if with_cpp}
    joins = {}
    for m in models:
        for variant in (NO_DRAFTS, WHOLE):
            long_prompt_joins(url, m.name + variant)  # warm-up
            joins[(m.name, variant)] = median_row([long_prompt_joins(url, m.name + variant) for _ in range(2)])
        print(f"long prompt joining {m.name}: {joins[(m.name, NO_DRAFTS)]} vs in one piece {joins[(m.name, WHOLE)]}",
              file=sys.stderr, flush=True)
    from conversation import conversation_turns, document_burst

    turns = {m.name: conversation_turns(url, m) for m in models}
    bursts = {m.name: document_burst(url, m) for m in models}
    return {"joins": joins, "turns": turns, "bursts": bursts,
            "rows": {name: {k: median_row(v) for k, v in per.items()} for name, per in runs.items()}, "runs": runs,
            "gguf": {m.name: setups[m.name]["cpp"].gguf for m in models if with_cpp}, "notes": notes}


def render(models: list[Model], result: dict, rounds: int, cpp_version: str | None,
           cpp_broken: str | None = None) -> str:
    load = os.getloadavg()[0]
    cpp_label = f"llama.cpp (llama-cpp-python {cpp_version})"
    omp = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp spins at barriers; a busy neighbour process then "
                         "slows llama.cpp by up to 20×, OMP_WAIT_POLICY=PASSIVE avoids that)")
    lines = [BEGIN, "## 5. Chat decode: " + ", ".join(m.name for m in models), "",
             f"Greedy, {NEW_TOKENS} new tokens, {THREADS} threads. SmolLM2 gets \"{STORY}\" as a chat message "
             "(ChatML template from its GGUF), Gemma 3 270M (a base model, /v1/completions) a story opening. "
             "**nnhost**: streamed through HTTP (SSE) → guest (template, SSE) → host generation engine → ONNX "
             "Runtime, with the prefix cache off (`prefix_cache_mib = 0`): every request repeats one prompt, which "
             "llama.cpp's rows prefill anew each time (`reset()`); the cache's gain is measured separately below. "
             "Speculative decoding by n-gram lookup is on, as by default (`speculative_tokens = 4`: tokens that "
             "followed an earlier occurrence of the last 2-3 tokens are checked in the same step, each position "
             "sampled as usual, so the text is the same); the **no drafts** rows decode one token per step. "
             "llama-cpp-python's own prompt lookup (`LlamaPromptLookupDecoding`) is not a row: it needs "
             "`logits_all=True` and decoded slower than without it on this machine (SmolLM2 54 vs 74-77 tok/s, "
             "Gemma 35 vs 35-39 tok/s with Gemma's text changed), so llama.cpp runs one token per step. "
             "**raw ORT**: onnxruntime's Python API on the naive int4 graph (onnx/model.onnx), greedy "
             "loop. **llama.cpp**: llama-cpp-python on the GGUF file the model was prepared from "
             "(models/cache/sources/…, sha256 checked against the manifest), same prompt tokens; 1 stream is "
             "`Llama.generate`, 4 streams are 4 sequences of one context decoded together in one `llama_batch` "
             "per step (what llama-server's parallel slots do). Time to first token: request (or prefill) start → "
             "first token; decode: the remaining tokens over the time from first to last token. "
             f"Medians of {rounds} rounds, the paths interleaved within each round. llama.cpp's OpenMP threads: "
             f"OMP_WAIT_POLICY={omp}. "
             f"Load average at the end: {load:.2f}.", "",
             "| model | path | streams | prompt tokens | time to first token ms | decode tok/s per stream "
             "| aggregate tok/s |",
             "|---|---|---|---|---|---|---|"]
    names = {"nnhost": "nnhost HTTP", "nodraft": "nnhost HTTP, no drafts (`speculative_tokens = 0`)",
             "fused": "nnhost HTTP, fused graph (int4-fused, KV in place)", "raw": "raw ORT (Python loop, naive graph)", "cpp": cpp_label}
    for m in models:
        rows = result["rows"][m.name]
        for key in [("nnhost", 1), ("nnhost", 4), ("nodraft", 1), ("nodraft", 4), ("fused", 1), ("fused", 4), ("raw", 1), ("cpp", 1), ("cpp", 4)]:
            if key in rows:
                r = rows[key]
                short = f" ({r['tokens']:.0f} tokens)" if r["tokens"] < NEW_TOKENS else ""
                lines.append(f"| {m.name} | {names[key[0]]}{short} | {key[1]} | {r['prompt_tokens']:.0f} | "
                             f"{r['ttft_ms']:.0f} | {r['decode_tok_s']:.1f} | {r['aggregate_tok_s']:.1f} |")
    lines.append("")
    if cpp_version is None:
        why = (f"`llama-cpp-python` is installed but llama.cpp failed on this machine: {cpp_broken}"
               if cpp_broken else
               "`llama-cpp-python` is not installed here (`just bench-peers` installs it; its build failed or "
               "was skipped)")
        lines += [f"{why}, so llama.cpp was not run side by side. PEERS.md, another day: llama.cpp 55.9 tok/s "
                  "SmolLM2-135M, 40.0 tok/s Gemma 3 270M, first token 19 / 28 ms.", ""]
    lines += ["| model | nnhost / raw ORT decode (1 stream) | nnhost decode / llama.cpp decode (1 stream; target ≥ 1.5) "
              "| nnhost TTFT / llama.cpp TTFT (1 stream; target ≤ 1) | nnhost / llama.cpp aggregate (4 streams) "
              "| nnhost aggregate 4 / 1 streams (target ≥ 2.5) | the same without drafts "
              "| drafts on / off decode (1 stream) | fused / plain graph decode (1 stream) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        runs = result["runs"][m.name]

        def ratio(a: tuple[str, int], b: tuple[str, int], field: str, ok=None) -> str:
            """Median over rounds of the ratio within each round (the paths of a round ran back to back)."""
            if a not in runs or b not in runs:
                return "–"
            v = statistics.median(x[field] / y[field] for x, y in zip(runs[a], runs[b]))
            return f"{v:.2f}×" + ("" if ok is None else (" ✓" if ok(v) else " ✗"))

        lines.append(f"| {m.name} | {ratio(('nnhost', 1), ('raw', 1), 'decode_tok_s')} | "
                     f"{ratio(('nnhost', 1), ('cpp', 1), 'decode_tok_s', lambda v: v >= 1.5)} | "
                     f"{ratio(('nnhost', 1), ('cpp', 1), 'ttft_ms', lambda v: v <= 1)} | "
                     f"{ratio(('nnhost', 4), ('cpp', 4), 'aggregate_tok_s')} | "
                     f"{ratio(('nnhost', 4), ('nnhost', 1), 'aggregate_tok_s', lambda v: v >= 2.5)} | "
                     f"{ratio(('nodraft', 4), ('nodraft', 1), 'aggregate_tok_s', lambda v: v >= 2.5)} | "
                     f"{ratio(('nnhost', 1), ('nodraft', 1), 'decode_tok_s')} | "
                     f"{ratio(('fused', 1), ('nodraft', 1), 'decode_tok_s')} |")
    lines += ["", "Ratios are medians over the rounds of each round's ratio (the paths of a round ran back to back).",
              "", "**A long prompt joining a running stream** (`batching.prefill_chunk_tokens`): one stream decodes; "
              "0.5 s in, a prompt of ~1500 tokens arrives (/v1/completions, one token asked). The stream's gaps between "
              "tokens meanwhile, and the long prompt's latency; median of 2 runs after a warm-up, default (chunks of "
              "128 tokens, a decode step of the running stream after each) against the same model with "
              "`prefill_chunk_tokens = 0` (in one piece); both without drafts (`speculative_tokens = 0`), whose "
              "tokens arriving several per step would hide the gaps.", "",
              "| model | prefill | prompt tokens | long prompt latency ms | stream gap p50 ms | stream gap max ms |",
              "|---|---|---|---|---|---|"]
    for m in models:
        for variant, label in ((NO_DRAFTS, "chunks of 128"), (WHOLE, "one piece")):
            j = result["joins"][(m.name, variant)]
            lines.append(f"| {m.name} | {label} | {j['prompt_tokens']:.0f} | {j['long_ms']:.0f} | "
                         f"{j['gap_p50_ms']:.1f} | {j['gap_max_ms']:.0f} |")
    lines += ["", "**A conversation about a document** (`batching.prefix_cache_mib`): a ~1500-token document, then "
              "three questions, each turn re-sending the whole conversation as chat clients do (SmolLM2: chat "
              "messages; Gemma: a Q/A transcript), 16 tokens streamed per answer. Time to first token per turn with "
              "the prefix cache (the model as configured: a turn prefills only what the previous turn's prompt did "
              "not hold) and without it (`prefix_cache_mib = 0`); the two interleaved, medians of 3 conversations, "
              "each on a document of its own.", "",
              "| model | turn | prompt tokens | TTFT without the cache ms | TTFT with the cache ms | speed-up |",
              "|---|---|---|---|---|---|"]
    for m in models:
        for t in result.get("turns", {}).get(m.name, []):
            lines.append(f"| {m.name} | {t['turn']} | {t['prompt_tokens']} | {t['cold_ms']:.0f} | "
                         f"{t['cached_ms']:.0f} | {t['cold_ms'] / t['cached_ms']:.1f}× |")
    lines += ["", "**Users asking about one document at once** (`batching.prefix_cache_mib`): four requests "
              "about the same ~1500-token document sent together, 4 tokens streamed each. With the cache, the later "
              "prompts wait for the first to be cached and prefill only their question; without it "
              "(`prefix_cache_mib = 0`) each prefills the whole document, one after the other. Time to first token "
              "of the four, fastest first; medians per rank over 2 bursts, each on a document of its own.", "",
              "| model | TTFT without the cache ms | TTFT with the cache ms | mean without / with |",
              "|---|---|---|---|"]
    for m in models:
        b = result.get("bursts", {}).get(m.name)
        if b:
            mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
            lines.append(f"| {m.name} | {' / '.join(f'{x:.0f}' for x in b['cold'])} | "
                         f"{' / '.join(f'{x:.0f}' for x in b['cached'])} | {mean(b['cold']) / mean(b['cached']):.1f}× |")
    for name, note in result.get("notes", {}).items():
        if note:
            lines += ["", f"llama.cpp 4 streams were not run for {name} ({note})."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md",
                    help="Markdown file whose chat-bench section is replaced (default docs/BENCHMARKS.md)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even if llama_cpp is importable")
    ap.add_argument("--probe-llama-cpp", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe_llama_cpp:
        probe_llama_cpp(args.probe_llama_cpp)
        return
    models = [MODELS[n] for n in args.models]
    cpp_version = None if args.no_llama_cpp else llama_cpp_version()
    cpp_broken = llama_cpp_probe(models) if cpp_version else None
    if cpp_broken:
        print(f"==> llama.cpp is not run side by side: {cpp_broken}", flush=True)
        cpp_version = None
    proc, url = start_server()
    try:
        result = measure(url, models, args.rounds, cpp_version is not None)
    finally:
        proc.terminate()
        proc.wait(30)
    section = render(models, result, args.rounds, cpp_version, cpp_broken)
    print(section)
    text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    args.out.write_text(text)


if __name__ == "__main__":
    main()
