"""Check a freshly converted decoder folder with onnxruntime (ORT_ENABLE_ALL) before it is published.

I/O contract of both variants; KV cache (prefill n-1 + one cached step == full prefill); left
padding does not change real tokens; int4 logits close to fp32; the manifest's greedy generation
checks ([[verify.generate]]) with the int4 graph and, for chat checks, the folder's chat template
(rendered with minijinja, the engine the host uses).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .decoder import INPUTS, KV_LAYOUT_KEY, past_names, present_names
from .decoder_fused import INPUTS as FUSED_INPUTS, KV_LAYOUT
from .errors import PrepError
from .gguf_convert import FP32_PATH, FUSED_PATH, INT4_PATH
from .manifest import Manifest

CACHE_TOLERANCE = 1e-4     # relative to max |logit|
PAD_TOLERANCE = 1e-4
INT4_MIN_COSINE = 0.8   # a guard against a broken graph; measured values are ~0.92-0.99 (see quantize.py)
FUSED_MIN_COSINE = 0.995   # fused int4 vs naive int4: same weights, different kernels
RAGGED_TOLERANCE = 1e-5    # fused int4: shared-buffer vs normal mode (relative; measured 0: same kernels)
# A row of a ragged decode batch vs the row decoded alone: exact (0) where MatMulNBits runs one row and
# several on the same kernel (AVX-512 VNNI machines); on AVX2-only CPUs it computes a batch of rows on
# another path than one row, which rounds the int8 activations differently (SmolLM2: 2e-2 to 6e-2 of
# max |logit|, cosine 0.9995-0.99996, same argmax). Held to the cached step's bound there.
FUSED_CACHE_MIN_COSINE = 0.999   # fused int4: cached step vs full prefill (measured 0.9998 on SmolLM2)
SMOKE = "The quick brown fox jumps over the lazy dog because"


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Decoder:
    """A decoder session plus the shapes needed to feed it (used by verify and the tests)."""

    def __init__(self, folder: Path, variant: str = INT4_PATH, threads: int = 0):
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.layers, self.kv_heads, self.head_dim = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]
        self.vocab = cfg["vocab_size"]
        self.sess = session(folder / variant, threads)
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def empty_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32) for n in past_names(self.layers)}

    def run(self, ids, mask=None, positions=None, past=None):
        """(last-position logits [B, vocab], present as the next call's past)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        past = past if past is not None else self.empty_past(ids.shape[0])
        plen = next(iter(past.values())).shape[2]
        if mask is None:
            mask = np.ones((ids.shape[0], plen + ids.shape[1]), np.int64)
        mask = np.asarray(mask, dtype=np.int64)
        if positions is None:
            # position = number of real tokens before it (left padding gets position 0..)
            positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, plen:]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.asarray(positions, np.int64), **past}
        out = self.sess.run(None, feeds)
        present = {n.replace("present.", "past_key_values."): v for n, v in zip(self.outputs[1:], out[1:])}
        return out[0][:, -1, :], present

    def greedy(self, ids: list[int], max_new: int, stop_ids=()) -> list[int]:
        logits, past = self.run(ids)
        out: list[int] = []
        total = len(ids)
        while True:
            nxt = int(np.argmax(logits[0]))
            out.append(nxt)
            if nxt in stop_ids or len(out) >= max_new:
                return out
            logits, past = self.run([nxt], positions=[[total]], past=past)
            total += 1


def ragged_mask(lengths, width: int) -> np.ndarray:
    """attention_mask of the ragged (right-padded) KV layout: row b is lengths[b] ones, then zeros."""
    lengths = np.asarray(lengths, np.int64)
    return (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)


class RaggedDecoder:
    """Drives a fused graph (nnhost.kv_layout = "ragged"; see decoder_fused.py): no position_ids, right-padded
    cache, either past -> present tensors (normal mode) or one buffer per layer bound as both past and present
    (shared-buffer mode, IOBinding)."""

    def __init__(self, sess, layers: int, kv_heads: int, head_dim: int):
        self.sess, self.layers, self.kv_heads, self.head_dim = sess, layers, kv_heads, head_dim
        self.outputs = [o.name for o in sess.get_outputs()]

    @classmethod
    def from_folder(cls, folder: Path, variant: str, threads: int = 0) -> "RaggedDecoder":
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return cls(session(folder / variant, threads), cfg["num_hidden_layers"], cfg["num_key_value_heads"],
                   cfg["head_dim"])

    def empty_past(self, batch: int = 1, length: int = 0) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, self.kv_heads, length, self.head_dim), np.float32) for n in past_names(self.layers)}

    def run(self, ids, lengths=None, past=None):
        """Normal mode. ids [B, S]; lengths[b] = valid cache entries of row b before this step (default: all of
        past); every row's S new tokens are real (a shorter prompt row: pass its own mask via run_mask).
        Returns (logits [B, vocab], present as the next call's past)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        past = past if past is not None else self.empty_past(ids.shape[0])
        plen = next(iter(past.values())).shape[2]
        lengths = np.full(ids.shape[0], plen) if lengths is None else np.asarray(lengths)
        return self.run_mask(ids, ragged_mask(lengths + ids.shape[1], plen + ids.shape[1]), past)

    def run_mask(self, ids, mask, past):
        out = self.sess.run(None, {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64),
                                   **past})
        present = {n.replace("present.", "past_key_values."): v for n, v in zip(self.outputs[1:], out[1:])}
        return out[0][:, -1, :], present

    def shared_cache(self, batch: int, capacity: int) -> dict:
        """One zeroed [batch, kv_heads, capacity, head_dim] OrtValue per past/present pair."""
        import onnxruntime as ort

        return {n: ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, self.kv_heads, capacity, self.head_dim),
                                                             np.float32)) for n in past_names(self.layers)}

    def run_shared(self, ids, mask, cache: dict) -> np.ndarray:
        """Shared-buffer mode: past and present bound to the same buffers; mask width <= capacity.
        Returns logits [B, vocab]; `cache` is updated in place."""
        b = self.sess.io_binding()
        b.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        b.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        b.bind_output("logits")
        for name, value in cache.items():
            b.bind_ortvalue_input(name, value)
            b.bind_ortvalue_output(name.replace("past_key_values.", "present."), value)
        self.sess.run_with_iobinding(b)
        return b.get_outputs()[0].numpy()[:, -1, :]

    def greedy(self, ids: list[int], max_new: int, stop_ids=()) -> list[int]:
        logits, past = self.run(ids)
        out: list[int] = []
        while True:
            nxt = int(np.argmax(logits[0]))
            out.append(nxt)
            if nxt in stop_ids or len(out) >= max_new:
                return out
            logits, past = self.run([nxt], past=past)


def check_io(dec: Decoder, name: str) -> None:
    ins = dec.sess.get_inputs()
    want = list(INPUTS) + past_names(dec.layers)
    if [i.name for i in ins] != want:
        raise PrepError(f"{name}: inputs {[i.name for i in ins][:5]}..., expected {want[:5]}...")
    if dec.outputs != ["logits"] + present_names(dec.layers):
        raise PrepError(f"{name}: outputs {dec.outputs[:3]}..., expected logits, present.N.key/value")
    kv = ins[3]
    if kv.type != "tensor(float)" or kv.shape[1] != dec.kv_heads or kv.shape[3] != dec.head_dim:
        raise PrepError(f"{name}: {kv.name} is {kv.type} {kv.shape}")


def render_chat(template: str, messages: list[dict], bos_token: str | None, eos_token: str | None) -> str:
    import minijinja

    def raise_exception(msg):
        raise PrepError(f"chat template: {msg}")

    env = minijinja.Environment()
    env.pycompat = False   # the templates must not rely on Python string/dict methods
    env.add_function("raise_exception", raise_exception)
    return env.render_str(template, messages=messages, add_generation_prompt=True,
                          bos_token=bos_token or "", eos_token=eos_token or "")


def verify_decoder(folder: Path, manifest: Manifest, layout: dict, log=print) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    fp32, int4 = Decoder(folder, FP32_PATH), Decoder(folder, INT4_PATH)
    check_io(fp32, FP32_PATH)
    check_io(int4, INT4_PATH)
    ids = tok.encode(SMOKE).ids

    full, _ = fp32.run(ids)
    head, past = fp32.run(ids[:-1])
    step, _ = fp32.run(ids[-1:], positions=[[len(ids) - 1]], past=past)
    scale = float(np.abs(full).max())
    cache_diff = float(np.abs(step - full).max()) / scale
    if not np.isfinite(full).all() or cache_diff > CACHE_TOLERANCE:
        raise PrepError(f"KV cache: cached decode step differs from full prefill by {cache_diff:.2e} (relative)")

    pad = 5
    padded, _ = fp32.run([0] * pad + ids, mask=[[0] * pad + [1] * len(ids)])
    pad_diff = float(np.abs(padded - full).max()) / scale
    if pad_diff > PAD_TOLERANCE:
        raise PrepError(f"left padding changes the logits by {pad_diff:.2e} (relative)")
    log(f"onnxruntime (ORT_ENABLE_ALL): I/O ok, KV cache diff {cache_diff:.1e}, left padding diff {pad_diff:.1e}")

    q, _ = int4.run(ids)
    cos = float(np.dot(q[0], full[0]) / (np.linalg.norm(q[0]) * np.linalg.norm(full[0])))
    if cos < INT4_MIN_COSINE:
        raise PrepError(f"int4 logits have cosine {cos:.4f} with fp32 (< {INT4_MIN_COSINE})")
    log(f"quantized (int4 or 8-bit) vs fp32 logits cosine {cos:.4f}")

    fused = RaggedDecoder.from_folder(folder, FUSED_PATH)
    facts = verify_fused(fused, ids, q, log)

    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    stop_ids = set(layout["stop_token_ids"])
    results = []
    for c, dec, name in [(c, dec, name) for c in manifest.generate_checks
                         for dec, name in ((int4, "int4"), (fused, "int4-fused"))]:
        if c.chat:
            if "chat_template" not in cfg:
                raise PrepError(f"generate check {c.prompt!r} wants a chat template; the folder has none")
            text = render_chat(cfg["chat_template"], [{"role": "user", "content": c.prompt}],
                               cfg.get("bos_token"), cfg.get("eos_token"))
            prompt = tok.encode(text, add_special_tokens=False).ids
        else:
            prompt = tok.encode(c.prompt).ids
        out = dec.greedy(prompt, c.max_new_tokens, stop_ids)
        answer = tok.decode(out, skip_special_tokens=True)
        results.append(answer)
        if c.expect not in answer:
            raise PrepError(f"greedy {name} answer to {c.prompt!r} lacks {c.expect!r}: {answer!r}")
        log(f"generate ok ({name}): {c.prompt!r} -> {answer.strip()[:60]!r}")
    return {"kv_cache_diff": cache_diff, "padding_diff": pad_diff, "int4_cosine": cos, "answers": results, **facts}


def verify_fused(dec: RaggedDecoder, ids: list[int], naive_logits: np.ndarray, log=print) -> dict:
    """The fused variant: I/O and layout metadata, logits vs the naive int4 graph, KV cache, a ragged decode
    batch vs each row alone, shared-buffer mode vs normal mode."""
    ins = [i.name for i in dec.sess.get_inputs()]
    if ins != list(FUSED_INPUTS) + past_names(dec.layers) or dec.outputs != ["logits"] + present_names(dec.layers):
        raise PrepError(f"{FUSED_PATH}: inputs {ins[:4]}..., outputs {dec.outputs[:3]}...")
    layout = dec.sess.get_modelmeta().custom_metadata_map.get(KV_LAYOUT_KEY)
    if layout != KV_LAYOUT:
        raise PrepError(f"{FUSED_PATH}: metadata {KV_LAYOUT_KEY} = {layout!r}, expected {KV_LAYOUT!r}")
    rel = lambda a, b: float(np.abs(a - b).max()) / float(np.abs(b).max())  # noqa: E731
    cosine = lambda a, b: float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731

    full, _ = dec.run(ids)
    cos = float(np.dot(full[0], naive_logits[0]) / (np.linalg.norm(full[0]) * np.linalg.norm(naive_logits[0])))
    if cos < FUSED_MIN_COSINE:
        raise PrepError(f"fused int4 logits have cosine {cos:.5f} with the naive int4 graph (< {FUSED_MIN_COSINE})")
    # int4 with accuracy_level 4 quantizes activations to int8: GroupQueryAttention's prompt and decode paths
    # round differently (~1e-7, exact in float32) and int8 rounding flips amplify that, so a cached step is
    # compared to the full prefill by cosine and argmax; same-path comparisons below are exact.
    _, past = dec.run(ids[:-1])
    step, _ = dec.run(ids[-1:], past=past)
    cache_cos = float(np.dot(step[0], full[0]) / (np.linalg.norm(step[0]) * np.linalg.norm(full[0])))
    if cache_cos < FUSED_CACHE_MIN_COSINE or step.argmax() != full.argmax():
        raise PrepError(f"fused KV cache: cached decode step vs full prefill: cosine {cache_cos:.5f}, "
                        f"argmax {step.argmax()} vs {full.argmax()}")

    short = ids[:4]
    _, past_short = dec.run(short)
    _, past_long = dec.run(ids)
    batch_past = dec.empty_past(2, len(ids))
    for k in batch_past:
        batch_past[k][0] = past_long[k][0]
        batch_past[k][1, :, :len(short)] = past_short[k][0]
    nxt = [[ids[0]], [ids[0]]]
    ragged, _ = dec.run(nxt, lengths=[len(ids), len(short)], past=batch_past)
    want_long, _ = dec.run(nxt[0], past=past_long)
    want_short, _ = dec.run(nxt[1], past=past_short)
    ragged_diff = max(rel(ragged[0], want_long[0]), rel(ragged[1], want_short[0]))
    ragged_cos = min(cosine(ragged[0], want_long[0]), cosine(ragged[1], want_short[0]))
    same_argmax = ragged[0].argmax() == want_long[0].argmax() and ragged[1].argmax() == want_short[0].argmax()
    if ragged_diff > RAGGED_TOLERANCE and (ragged_cos < FUSED_CACHE_MIN_COSINE or not same_argmax):
        raise PrepError(f"fused ragged decode batch differs from the rows alone by {ragged_diff:.2e} (relative), "
                        f"cosine {ragged_cos:.5f}, same argmax: {same_argmax}")

    cache = dec.shared_cache(1, len(ids) + 8)
    dec.run_shared([ids[:-1]], ragged_mask([len(ids) - 1], len(ids) - 1), cache)
    shared = dec.run_shared([ids[-1:]], ragged_mask([len(ids)], len(ids) + 8), cache)
    shared_diff = rel(shared, step)
    if shared_diff > RAGGED_TOLERANCE:
        raise PrepError(f"fused shared-buffer mode differs from normal mode by {shared_diff:.2e}")
    log(f"{FUSED_PATH}: I/O and {KV_LAYOUT_KEY}={KV_LAYOUT} ok, cosine with naive int4 {cos:.5f}, cached step "
        f"vs prefill cosine {cache_cos:.5f}, ragged batch diff {ragged_diff:.1e} (cosine {ragged_cos:.5f}), shared buffer diff {shared_diff:.1e}")
    return {"fused_cosine": cos, "fused_ragged_diff": ragged_diff}
