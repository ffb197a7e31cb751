"""Check a freshly converted embedding folder with onnxruntime before it is published.

Loads onnx/model.onnx with GraphOptimizationLevel.ORT_ENABLE_ALL (as the host will), checks the
I/O contract, that padding does not change results, and the manifest's cosine acceptance facts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .bert import INPUTS, OUTPUT
from .errors import PrepError
from .manifest import EmbeddingSpec, Manifest

PAD_TOLERANCE = 1e-5
SMOKE = ("Hello world.", "A considerably longer sentence, so that the others get padded in a batch.")


def session(onnx_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def tokenizer(folder: Path, max_len: int):
    """The folder's tokenizer.json with per-batch padding and explicit truncation, as the host does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = "[PAD]"
    stm = folder / "special_tokens_map.json"
    if stm.is_file():
        p = json.loads(stm.read_text(encoding="utf-8")).get("pad_token", pad)
        pad = p["content"] if isinstance(p, dict) else p
    pad_id = tok.token_to_id(pad)
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad)
    tok.enable_truncation(max_length=max_len)
    return tok


def encode(tok, texts) -> dict[str, np.ndarray]:
    enc = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def pool(hidden: np.ndarray, mask: np.ndarray, spec: EmbeddingSpec) -> np.ndarray:
    if spec.pooling == "cls":
        out = hidden[:, 0, :]
    else:
        m = mask[..., None].astype(np.float32)
        out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if spec.normalize:
        out = out / np.clip(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12, None)
    return out


def embed(sess, tok, texts, spec: EmbeddingSpec) -> np.ndarray:
    feeds = encode(tok, texts)
    (hidden,) = sess.run([OUTPUT], feeds)
    return pool(hidden, feeds["attention_mask"], spec)


def check_io(sess, dim: int) -> None:
    ins = {i.name: i for i in sess.get_inputs()}
    if set(ins) != set(INPUTS):
        raise PrepError(f"ONNX inputs are {sorted(ins)}, expected {sorted(INPUTS)}")
    for i in ins.values():
        if i.type != "tensor(int64)" or len(i.shape) != 2:
            raise PrepError(f"ONNX input {i.name}: {i.type} {i.shape}, expected int64 [batch, sequence]")
    outs = sess.get_outputs()
    if [o.name for o in outs] != [OUTPUT] or outs[0].type != "tensor(float)" or outs[0].shape[-1] != dim:
        raise PrepError(f"ONNX outputs {[(o.name, o.type, o.shape) for o in outs]}, expected {OUTPUT} float [.., {dim}]")


def verify_embedding(folder: Path, manifest: Manifest, dim: int, log=print) -> dict:
    spec = manifest.embedding
    sess = session(folder / "onnx" / "model.onnx")
    check_io(sess, dim)
    tok = tokenizer(folder, spec.max_seq_length)

    texts = list(SMOKE) + [t for c in manifest.cosine_checks for t in (c.a, c.b)]
    feeds = encode(tok, texts)
    (hidden,) = sess.run([OUTPUT], feeds)
    if hidden.shape != feeds["input_ids"].shape + (dim,) or not np.isfinite(hidden).all():
        raise PrepError(f"ONNX output has shape {hidden.shape} or non-finite values")
    batched = pool(hidden, feeds["attention_mask"], spec)
    worst = 0.0
    for i, t in enumerate(texts):
        single = embed(sess, tok, [t], spec)[0]
        worst = max(worst, float(np.abs(single - batched[i]).max()))
    if worst > PAD_TOLERANCE:
        raise PrepError(f"padding changes embeddings by {worst:.2e} (> {PAD_TOLERANCE})")
    log(f"onnxruntime (ORT_ENABLE_ALL): I/O ok, padding invariance max diff {worst:.1e}")

    cosines = []
    for c in manifest.cosine_checks:
        a, b = embed(sess, tok, [c.a, c.b], spec)
        cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        cosines.append(cos)
        if abs(cos - c.expect) > c.tolerance:
            raise PrepError(f"cosine({c.a!r}, {c.b!r}) = {cos:.4f}, expected {c.expect:.4f} ± {c.tolerance}")
    if cosines:
        log("cosine checks ok: " + ", ".join(f"{c:.4f}" for c in cosines))
    return {"padding_max_diff": worst, "cosines": cosines}
