"""GGUF decoder (llama, gemma3) -> the onnx-community decoder layout.

  NAME/onnx/model.onnx            int4 (MatMulNBits block 32, accuracy_level 4; see quantize.py)
                                  (each graph's weights beside it in NAME.onnx.data: onnx_file.py)
  NAME/onnx/model_fp32.onnx       float32 reference (weights dequantized from the GGUF)
  NAME/onnx/model_fused.onnx      int4 like model.onnx, fused graph (GroupQueryAttention, ragged KV layout;
                                  see decoder_fused.py); variant "int4-fused"
  NAME/tokenizer.json             rebuilt from the GGUF metadata (gguf_tokenizer)
  NAME/tokenizer_config.json      chat_template, bos/eos/unk/pad tokens, add_bos_token
  NAME/special_tokens_map.json
  NAME/config.json                HF config (model_type "llama" / "gemma3_text")
  NAME/generation_config.json     bos_token_id, eos_token_id (list incl. the turn-end token)
  NAME/nnhost.json                written by layout.write_nnhost
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from . import onnx_file
from .checksums import sha256_file
from .decoder import build_decoder_onnx
from .decoder_fused import build_fused_decoder_onnx
from .errors import PrepError
from .gguf_load import GGUFModel, DecoderSpec
from .manifest import Manifest

INT4_PATH = "onnx/model.onnx"
FP32_PATH = "onnx/model_fp32.onnx"
FUSED_PATH = "onnx/model_fused.onnx"
VARIANTS = {"int4": INT4_PATH, "fp32": FP32_PATH, "int4-fused": FUSED_PATH}

# Gemma's documented turn format (the official Gemma 3 template, text parts only): a system message
# becomes the prefix of the first user turn; "assistant" is called "model". Written for minijinja
# (no Python string methods); the host must provide raise_exception() as HF's chat templates assume.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def open_gguf(manifest: Manifest, src: Path, log: Callable[[str], None]) -> GGUFModel:
    opts = manifest.decoder
    path = src / opts.gguf
    if not path.is_file():
        raise PrepError(f"source folder {src} has no {opts.gguf}")
    if opts.gguf_sha256:
        digest = sha256_file(path)
        if digest != opts.gguf_sha256.lower():
            raise PrepError(f"{path} has sha256 {digest}, manifest pins {opts.gguf_sha256}")
        log(f"{opts.gguf}: sha256 ok ({digest[:8]}…{digest[-4:]})")
    return GGUFModel(path)


def convert(manifest: Manifest, src: Path, dst: Path, log: Callable[[str], None]) -> dict:
    """Write both ONNX variants into `dst`; returns facts (spec, the open GGUF) for the layout step."""
    from .quantize import quantize_weights

    opts = manifest.decoder
    g = open_gguf(manifest, src, log)
    s = g.spec
    log(f"{s.arch}: {s.num_layers} layers, hidden {s.hidden_size}, heads {s.num_heads}/{s.num_kv_heads} kv, "
        f"head_dim {s.head_dim}, vocab {s.vocab_size}, context {s.context_length}"
        + (f", sliding window {s.sliding_window} on {len(s.sliding_layers)} layers" if s.sliding_layers else ""))
    t = time.monotonic()
    weights = g.weights(log)
    log(f"dequantized in {time.monotonic() - t:.1f}s")

    t = time.monotonic()
    onnx_file.save(build_decoder_onnx(s, weights), dst / FP32_PATH)
    log(f"wrote {FP32_PATH} ({onnx_file.stored_bytes(dst / FP32_PATH) / 1e6:.0f} MB) in {time.monotonic() - t:.1f}s")

    t = time.monotonic()
    model = build_decoder_onnx(s, weights, untie_lm_head=opts.lm_head_bits != 0)
    model = quantize_weights(model, embedding=opts.int4_embedding, lm_head_bits=opts.lm_head_bits,
                             weight_bits=opts.weight_bits)
    onnx_file.save(model, dst / INT4_PATH)
    del model
    if opts.weight_bits == 8:
        what = f"8-bit MatMuls and LM head, embedding {'8-bit' if opts.int4_embedding else 'float32'}"
    else:
        what = (f"int4 MatMuls, LM head {f'{opts.lm_head_bits}-bit' if opts.lm_head_bits else 'float32'}, "
                f"embedding {'int4' if opts.int4_embedding else 'float32'}")
    log(f"wrote {INT4_PATH} ({onnx_file.stored_bytes(dst / INT4_PATH) / 1e6:.0f} MB; {what}) "
        f"in {time.monotonic() - t:.1f}s")

    t = time.monotonic()
    model = build_fused_decoder_onnx(s, weights, max_positions=context_length(manifest, s),
                                     untie_lm_head=opts.lm_head_bits != 0)
    del weights
    model = quantize_weights(model, embedding=opts.int4_embedding, lm_head_bits=opts.lm_head_bits,
                             weight_bits=opts.weight_bits)
    onnx_file.save(model, dst / FUSED_PATH)
    log(f"wrote {FUSED_PATH} ({onnx_file.stored_bytes(dst / FUSED_PATH) / 1e6:.0f} MB; fused graph, {what}) "
        f"in {time.monotonic() - t:.1f}s")
    return {"spec": s, "gguf": g}


def context_length(manifest: Manifest, spec: DecoderSpec) -> int:
    return min(spec.context_length, manifest.decoder.max_context)


def chat_template(manifest: Manifest, g: GGUFModel) -> str | None:
    which = manifest.decoder.chat_template
    if which == "gguf":
        t = g.get("tokenizer.chat_template")
        if not t:
            raise PrepError(f"{g.path.name} has no tokenizer.chat_template; set [decoder] chat_template")
        return t
    return GEMMA_CHAT_TEMPLATE if which == "gemma" else None


def hf_config(spec: DecoderSpec, ctx: int, ids: dict) -> dict:
    s = spec
    cfg = {
        "architectures": ["LlamaForCausalLM" if s.arch == "llama" else "Gemma3ForCausalLM"],
        "model_type": "llama" if s.arch == "llama" else "gemma3_text",
        "vocab_size": s.vocab_size, "hidden_size": s.hidden_size, "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_layers, "num_attention_heads": s.num_heads,
        "num_key_value_heads": s.num_kv_heads, "head_dim": s.head_dim,
        "max_position_embeddings": ctx, "rms_norm_eps": s.rms_eps, "rope_theta": s.rope_theta,
        "rope_scaling": None if s.rope_scaling == 1.0 else {"rope_type": "linear", "factor": s.rope_scaling},
        "tie_word_embeddings": s.tied_embeddings, "use_cache": True, "torch_dtype": "float32",
        "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
        "sliding_window": s.sliding_window,
    }
    if s.arch == "llama":
        cfg.update(hidden_act="silu", attention_bias=False, mlp_bias=False)
    else:
        cfg.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=s.head_dim,
                   rope_local_base_freq=s.rope_theta_local, sliding_window_pattern=6,
                   layer_types=["sliding_attention" if i in s.sliding_layers else "full_attention"
                                for i in range(s.num_layers)],
                   final_logit_softcapping=s.final_logit_softcap, attn_logit_softcapping=None)
    return cfg


def write_decoder_files(manifest: Manifest, dst: Path, facts: dict) -> dict:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json, config.json, generation_config.json.
    Returns facts for nnhost.json (context_length, stop tokens, token ids)."""
    from .gguf_tokenizer import build_tokenizer

    g, s = facts["gguf"], facts["spec"]
    tok, t = build_tokenizer(g)
    tok.save(str(dst / "tokenizer.json"), pretty=False)
    ctx = context_length(manifest, s)
    template = chat_template(manifest, g)

    def tid(text: str | None) -> int | None:
        return None if text is None else tok.token_to_id(text)

    stop = list(dict.fromkeys([t["eos_token"], *manifest.decoder.stop]))
    missing = [x for x in stop if tid(x) is None]
    if missing:
        raise PrepError(f"{manifest.name}: stop token(s) {missing} are not in the vocabulary")
    ids = {"bos": tid(t["bos_token"]), "eos": [tid(x) for x in stop], "pad": tid(t["pad_token"])}
    special = {k: t[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if t[k] is not None}
    config = {
        "add_bos_token": t["add_bos_token"], "add_eos_token": t["add_eos_token"], **special,
        "clean_up_tokenization_spaces": False, "model_max_length": ctx, "padding_side": "left",
        "tokenizer_class": "GemmaTokenizer" if s.arch == "gemma3" else "GPT2Tokenizer",
    }
    if template is not None:
        config["chat_template"] = template
    _write_json(dst / "tokenizer_config.json", config)
    _write_json(dst / "special_tokens_map.json", special)
    _write_json(dst / "config.json", hf_config(s, ctx, {**ids, "eos": ids["eos"][0]}))
    _write_json(dst / "generation_config.json", {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"],
                                                 "pad_token_id": ids["pad"], "do_sample": False})
    return {"context_length": ctx, "stop_tokens": stop, "stop_token_ids": ids["eos"], "bos_token": t["bos_token"],
            "bos_token_id": ids["bos"], "add_bos_token": t["add_bos_token"], "has_chat_template": template is not None}
