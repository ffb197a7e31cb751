#!/usr/bin/env python3
"""Raw ONNX Runtime decode speed of the prepared decoders: naive int4 graph (onnx/model.onnx, left-padded
layout, Concat KV cache) vs fused int4 graph (onnx/model_fused.onnx, GroupQueryAttention, ragged layout) in
normal mode (past -> present tensors) and shared-buffer mode (past and present bound to one buffer).

Python loop, session.run / IOBinding only; 2 intra-op threads, sequential, spinning off. The variants are
measured interleaved (round-robin, median over rounds), since the machine is shared: compare ratios.

    .venv/bin/python tests/bench/raw_decoder.py [--models smollm2-135m-instruct gemma-3-270m] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

from nnprep.verify_decoder import Decoder, RaggedDecoder, ragged_mask  # noqa: E402

PROMPT = ("The history of the city begins in the third century BC, when a Celtic people settled on an island in the "
          "river. Over the following centuries the settlement grew into a trading town, and by the Middle Ages it had "
          "become one of the largest cities in Europe, famous for")


def session(path: Path, threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


class Naive:
    name = "naive int4"

    def __init__(self, folder: Path, threads: int):
        self.d = Decoder.__new__(Decoder)
        Decoder.__init__(self.d, folder, "onnx/model.onnx")
        self.d.sess = session(folder / "onnx/model.onnx", threads)

    def prefill(self, ids):
        t = time.perf_counter()
        logits, past = self.d.run(ids)
        return time.perf_counter() - t, logits, past

    def decode(self, prompts: list[list[int]], steps: int) -> float:
        """Batch of prompts (prefilled one at a time, left-padded into one cache), then `steps` greedy steps."""
        B, P = len(prompts), max(len(p) for p in prompts)
        past = {k: np.zeros((B, self.d.kv_heads, P, self.d.head_dim), np.float32) for k in self.d.empty_past()}
        nxt, lengths = [], []
        for b, ids in enumerate(prompts):
            logits, p = self.d.run(ids)
            for k in past:
                past[k][b, :, P - len(ids):] = p[k][0]
            nxt.append(int(logits[0].argmax()))
            lengths.append(len(ids))
        mask = np.array([[0] * (P - n) + [1] * n for n in lengths], np.int64)
        t = time.perf_counter()
        for _ in range(steps):
            mask = np.concatenate([mask, np.ones((B, 1), np.int64)], 1)
            pos = np.array(lengths, np.int64)[:, None]
            logits, past = self.d.run(np.array(nxt)[:, None], mask=mask, positions=pos, past=past)
            nxt, lengths = [int(x) for x in logits.argmax(-1)], [n + 1 for n in lengths]
        return time.perf_counter() - t


class Fused:
    def __init__(self, folder: Path, threads: int, shared: bool):
        self.name = "fused int4 " + ("shared buffer" if shared else "normal")
        self.shared = shared
        import json

        cfg = json.loads((folder / "config.json").read_text())
        self.d = RaggedDecoder(session(folder / "onnx/model_fused.onnx", threads), cfg["num_hidden_layers"],
                               cfg["num_key_value_heads"], cfg["head_dim"])

    def prefill(self, ids):
        t = time.perf_counter()
        if self.shared:
            cache = self.d.shared_cache(1, len(ids) + 160)
            logits = self.d.run_shared([ids], ragged_mask([len(ids)], len(ids)), cache)
            return time.perf_counter() - t, logits, cache
        logits, past = self.d.run(ids)
        return time.perf_counter() - t, logits, past

    def decode(self, prompts: list[list[int]], steps: int) -> float:
        B = len(prompts)
        P = max(len(p) for p in prompts)
        lengths = np.array([len(p) for p in prompts])
        if self.shared:
            cap = P + steps
            cache = self.d.shared_cache(B, cap)
            views = {k: v.numpy() for k, v in cache.items()}
        else:
            past = self.d.empty_past(B, P)
            views = past
        nxt = []
        for b, ids in enumerate(prompts):
            logits, p = self.d.run(ids)
            for k in views:
                views[k][b, :, :len(ids)] = p[k][0]
            nxt.append(int(logits[0].argmax()))
        t = time.perf_counter()
        for _ in range(steps):
            ids = np.array(nxt, np.int64)[:, None]
            if self.shared:
                logits = self.d.run_shared(ids, ragged_mask(lengths + 1, int(lengths.max()) + 1), cache)
            else:
                logits, past = self.d.run(ids, lengths=lengths, past=past)
            nxt, lengths = [int(x) for x in logits.argmax(-1)], lengths + 1
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    rows = []
    for name in args.models:
        folder = ROOT / "models" / "prepared" / name
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = tok.encode(PROMPT).ids
        prompts4 = [ids, ids[:20], ids[:35], ids[:10]]
        variants = [Naive(folder, args.threads), Fused(folder, args.threads, False), Fused(folder, args.threads, True)]
        res = {v.name: {"prefill": [], "b1": [], "b4": []} for v in variants}
        for v in variants:   # warm-up
            v.prefill(ids)
            v.decode([ids[:8]], 4)
        for _ in range(args.rounds):
            for v in variants:
                res[v.name]["prefill"].append(v.prefill(ids)[0])
            for v in variants:
                res[v.name]["b1"].append(args.steps / v.decode([ids], args.steps))
            for v in variants:
                res[v.name]["b4"].append(4 * args.steps / v.decode(prompts4, args.steps))
        for v in variants:
            r = res[v.name]
            rows.append((name, v.name, len(ids), 1000 * statistics.median(r["prefill"]), statistics.median(r["b1"]),
                         statistics.median(r["b4"])))
    print(f"\nraw ORT {ort.__version__}, {args.threads} intra-op threads, sequential, no spinning; "
          f"median of {args.rounds} interleaved rounds; decode {args.steps} tokens per row")
    print(f"| model | graph | prefill (tokens) ms | decode batch 1 tok/s | decode batch 4 tok/s (total) |")
    print("|---|---|---|---|---|")
    for m, v, n, pre, b1, b4 in rows:
        print(f"| {m} | {v} | {pre:.0f} ({n}) | {b1:.1f} | {b4:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
