"""Write a prepared model folder: embeddings in the Hugging Face sentence-transformers layout (below),
decoders in the onnx-community layout (see gguf_convert.py); nnhost.json for both.

  NAME/onnx/model.onnx            written by the converter
  NAME/tokenizer.json             original, padding and truncation set to null
  NAME/config.json, tokenizer_config.json, special_tokens_map.json, ... (copied when present)
  NAME/1_Pooling/config.json      copied (or generated for a plain HF BERT folder)
  NAME/modules.json               Transformer + Pooling (+ Normalize when normalize = true)
  NAME/sentence_bert_config.json  {"max_seq_length": ..., "do_lower_case": ...}
  NAME/nnhost.json                what the Rust host reads, incl. sha256 of every other file
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .checksums import MANIFEST_FILE, hash_tree
from .errors import PrepError
from .manifest import EmbeddingSpec, Manifest

COPY_IF_PRESENT = ("config.json", "tokenizer_config.json", "special_tokens_map.json",
                   "config_sentence_transformers.json", "LICENSE", "NOTICE", "README.md")
ONNX_PATH = "onnx/model.onnx"


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_tokenizer(src: Path, dst: Path) -> None:
    """Copy tokenizer.json with fixed padding/truncation removed (the host pads per batch)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def pooling_config(spec: EmbeddingSpec, dim: int, src: Path) -> dict:
    """1_Pooling/config.json from the source, checked against the manifest (or generated)."""
    f = src / "1_Pooling" / "config.json"
    if f.is_file():
        cfg = json.loads(f.read_text(encoding="utf-8"))
        mode = "cls" if cfg.get("pooling_mode_cls_token") else "mean" if cfg.get("pooling_mode_mean_tokens") else "other"
        if mode != spec.pooling:
            raise PrepError(f"manifest pooling '{spec.pooling}' disagrees with {f} ('{mode}')")
        if int(cfg.get("word_embedding_dimension", dim)) != dim:
            raise PrepError(f"{f}: word_embedding_dimension {cfg['word_embedding_dimension']} != hidden size {dim}")
        return cfg
    return {"word_embedding_dimension": dim,
            "pooling_mode_cls_token": spec.pooling == "cls",
            "pooling_mode_mean_tokens": spec.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}


def modules_json(normalize: bool) -> list[dict]:
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        mods.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    return mods


def write_embedding_files(src: Path, dst: Path, spec: EmbeddingSpec, dim: int) -> None:
    """Everything but the ONNX file and nnhost.json."""
    write_tokenizer(src / "tokenizer.json", dst / "tokenizer.json")
    for name in COPY_IF_PRESENT:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    _write_json(dst / "1_Pooling" / "config.json", pooling_config(spec, dim, src))
    _write_json(dst / "modules.json", modules_json(spec.normalize))
    do_lower = False
    sb = src / "sentence_bert_config.json"
    if sb.is_file():
        do_lower = bool(json.loads(sb.read_text(encoding="utf-8")).get("do_lower_case", False))
    _write_json(dst / "sentence_bert_config.json", {"max_seq_length": spec.max_seq_length, "do_lower_case": do_lower})


def write_nnhost(dst: Path, manifest: Manifest, source_info: dict, facts: dict, recipe: str) -> dict:
    """Write nnhost.json last: it records the sha256 of every other file in the folder."""
    meta = {"name": manifest.name, "kind": manifest.kind, "source": source_info}
    if manifest.embedding is not None:
        spec = manifest.embedding
        meta.update({
            "pooling": spec.pooling,
            "normalize": spec.normalize,
            "dimensions": facts["dimensions"],
            "max_seq_length": spec.max_seq_length,
        })
    else:
        meta.update(decoder_meta(manifest, facts))
    meta.update({"converter": manifest.converter, "recipe": recipe, "files": hash_tree(dst)})
    _write_json(dst / MANIFEST_FILE, meta)
    return meta


def decoder_meta(manifest: Manifest, facts: dict) -> dict:
    """The decoder part of nnhost.json (see models/nnprep/gguf_convert.py for the folder layout)."""
    s = facts["spec"]
    meta = {}
    if manifest.kind == "completion":
        meta["base_model"] = True
    meta.update({
        "architecture": s.arch,
        "context_length": facts["context_length"],
        "stop_tokens": facts["stop_tokens"],
        "stop_token_ids": facts["stop_token_ids"],
        "bos_token": facts["bos_token"],
        "bos_token_id": facts["bos_token_id"],
        "add_bos_token": facts["add_bos_token"],
        # "int4-fused" has the ragged (right-padded) KV layout and no position_ids input (decoder_fused.py);
        # each graph names its layout in the ONNX metadata_props key nnhost.kv_layout
        "variants": {"int4": "onnx/model.onnx", "fp32": "onnx/model_fp32.onnx",
                     "int4-fused": "onnx/model_fused.onnx"},
        # What the host serves unless its config names a file. Not int4-fused: equally accurate on
        # average, but its int8-quantized activations flip different near-ties (SmolLM2's answer to
        # "What is the capital of France?" starts "L'" instead of "The"; the plain graph wins that tie
        # by 0.006 logits, see docs/PROVIDERS.md), so it stays opt-in for now.
        "default_variant": "int4",
        "logits": "last",   # logits output is [batch, 1, vocab]: the last input position only
        "kv_cache": {"layers": s.num_layers, "kv_heads": s.num_kv_heads, "head_dim": s.head_dim,
                     "sliding_window": s.sliding_window},
    })
    return meta


def staging_dir(out: Path, name: str) -> Path:
    """A fresh sibling folder to build into, so a failed run never leaves a half-written output."""
    tmp = out / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, final: Path) -> None:
    """Move the staged folder into place, replacing any previous output."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
