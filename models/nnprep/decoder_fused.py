"""Decoder-only transformer (llama, gemma3) -> a FUSED ONNX graph with ONNX Runtime contrib ops.

The same model as decoder.py (same weights, same initializer names for the int4 quantizer), built
from com.microsoft GroupQueryAttention (rotary inside, from cos/sin cache initializers),
SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization (RMSNorm + residual add) and, after
quantize.quantize_weights, MatMulNBits -- the operators onnxruntime-genai's model builder emits.

Graph I/O (no position_ids: GroupQueryAttention derives rotary positions from seqlens_k):
  inputs  input_ids                   int64   [batch_size, sequence_length]
          attention_mask              int64   [batch_size, total_sequence_length]
          past_key_values.{i}.key     float32 [batch_size, kv_heads, past_sequence_length, head_dim]
          past_key_values.{i}.value   (same)
  outputs logits                      float32 [batch_size, 1, vocab]   -- each row's LAST real position
          present.{i}.key / .value    float32 [batch_size, kv_heads, present_sequence_length, head_dim]

KV layout "ragged" (right-padded), metadata_props nnhost.kv_layout = "ragged":
  * row b's valid keys are cache positions [0, L_b); its attention_mask row is L_b + S ones, then zeros
    (real tokens first).  seqlens_k = sum(mask, 1) - 1 (int32), total_sequence_length = mask width.
  * rotary position of a new token = its cache index (decode: seqlens_k[b]; first prompt: 0..S-1).
  * normal mode: past [B, kvh, P, d] -> present [B, kvh, P + S, d]; mask width must be P + S.
  * shared-buffer mode: past_key_values.{i}.* and present.{i}.* bound (IOBinding) to the SAME buffer
    [B, kvh, C, d]; GroupQueryAttention sees past and present data pointers equal and writes the new
    tokens in place at [L_b, L_b + S).  present has shape [B, kvh, C, d]; mask width <= C; C must not
    exceed the rotary tables (max_positions rows).
  * a step with S > 1 is a "prompt": with an empty/unused cache (mask width == S) any batch size,
    right-padded rows allowed (logits come from each row's last real token); a prompt on top of a
    non-empty cache (chunked prefill) needs batch 1 (an ORT restriction).  Decode (S = 1) handles
    rows of different lengths exactly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from .decoder import KV_LAYOUT_KEY, LOGITS_TO_KEEP, OPSET, _Graph, _w, past_names, present_names
from .errors import PrepError
from .gguf_load import DecoderSpec

MS = "com.microsoft"
KV_LAYOUT = "ragged"
INPUTS = ("input_ids", "attention_mask")


def rope_cache(theta: float, scaling: float, head_dim: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [positions, head_dim/2] (HF rotate-half convention, linear scaling divides positions)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)) / scaling
    ang = np.arange(positions, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def build_fused_decoder_onnx(spec: DecoderSpec, weights: dict[str, np.ndarray], *, max_positions: int,
                             untie_lm_head: bool = False,
                             progress: Callable[[int], None] | None = None) -> onnx.ModelProto:
    s = spec
    H, nh, kvh, d = s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim
    if d % 16:
        raise PrepError(f"fused decoder: GroupQueryAttention's rotary needs head_dim % 16 == 0 (got {d})")
    g = _Graph()

    def ms(op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs):
        out = g.op(op_type, inputs, name, outputs, **attrs)
        node = g.nodes[-1]
        node.domain = MS
        return out

    def norm(x: str, weight: np.ndarray, name: str) -> str:
        return g.op("SimplifiedLayerNormalization", [x, g.init(name, weight.astype(np.float32))],
                    axis=-1, epsilon=float(s.rms_eps), stash_type=1)

    def skip_norm(residual: str, x: str, weight: np.ndarray, name: str) -> tuple[str, str]:
        """(RMSNorm(residual + x), residual + x)."""
        g._n += 1
        base = f"skipnorm_{g._n}"
        g.nodes.append(helper.make_node(
            "SkipSimplifiedLayerNormalization", [residual, x, g.init(name, weight.astype(np.float32))],
            [base, "", "", base + "_sum"], name=f"SkipSimplifiedLayerNormalization_{g._n}", domain=MS,
            epsilon=float(s.rms_eps)))
        return base, base + "_sum"

    def linear(x: str, w: np.ndarray, name: str) -> str:
        return g.op("MatMul", [x, g.init(name, np.ascontiguousarray(w.T))])   # [in, out]

    # --- GroupQueryAttention's length inputs, as onnxruntime-genai computes them
    lens = g.op("ReduceSum", ["attention_mask", g.i64(1)], keepdims=0)                     # [B] int64
    seqlens_k = g.op("Cast", [g.op("Sub", [lens, g.const(1, np.int64)])], "seqlens_k", to=TensorProto.INT32)
    total_1d = g.op("Shape", ["attention_mask"], start=1, end=2)
    total_len = g.op("Cast", [g.op("Squeeze", [total_1d, g.i64(0)])], "total_sequence_length",
                     to=TensorProto.INT32)

    cos_g, sin_g = rope_cache(s.rope_theta, s.rope_scaling, d, max_positions)
    rope_global = (g.init("cos_cache_global", cos_g), g.init("sin_cache_global", sin_g))
    rope_local = None
    if s.sliding_layers:
        cos_l, sin_l = rope_cache(s.rope_theta_local, 1.0, d, max_positions)
        rope_local = (g.init("cos_cache_local", cos_l), g.init("sin_cache_local", sin_l))

    # --- embeddings
    embed = _w(weights, "token_embd.weight")
    if embed.shape != (s.vocab_size, H):
        raise PrepError(f"decoder converter: token_embd is {embed.shape}, expected {(s.vocab_size, H)}")
    embed_name = g.init("token_embd.weight", embed)
    residual = g.op("Gather", [embed_name, "input_ids"], axis=0)
    if s.embed_scale:
        residual = g.op("Mul", [residual, g.f32(s.embed_scale)])
    h = norm(residual, _w(weights, "blk.0.attn_norm.weight"), "blk.0.attn_norm.weight")

    mlp = ""
    for i in range(s.num_layers):
        p = f"blk.{i}."
        sliding = i in s.sliding_layers
        wq = _w(weights, p + "attn_q.weight")
        wk, wv = _w(weights, p + "attn_k.weight"), _w(weights, p + "attn_v.weight")
        qkv = linear(h, np.concatenate([wq, wk, wv], axis=0), p + "attn_qkv.weight_t")
        if s.qk_norm:   # gemma3: per-head RMSNorm of q and k before rotary (GQA's own q/k norm is GPU-only)
            q, k, v = g.op("Split", [qkv, g.i64(nh * d, kvh * d, kvh * d)], outputs=3, axis=-1)
            q = norm(g.op("Reshape", [q, g.i64(0, 0, nh, d)]), _w(weights, p + "attn_q_norm.weight"),
                     p + "attn_q_norm.weight")
            k = norm(g.op("Reshape", [k, g.i64(0, 0, kvh, d)]), _w(weights, p + "attn_k_norm.weight"),
                     p + "attn_k_norm.weight")
            qkv_in = [g.op("Reshape", [q, g.i64(0, 0, nh * d)]), g.op("Reshape", [k, g.i64(0, 0, kvh * d)]), v]
        else:
            qkv_in = [qkv, "", ""]
        cos, sin = rope_local if sliding else rope_global
        attrs = dict(num_heads=nh, kv_num_heads=kvh, do_rotary=1, rotary_interleaved=0, scale=float(s.query_scale))
        if sliding:
            attrs["local_window_size"] = int(s.sliding_window)   # ORT 1.32: == HF sliding_window (keys incl. self)
        g._n += 1
        attn = f"attn_{i}"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            qkv_in + [f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total_len, cos, sin],
            [attn, f"present.{i}.key", f"present.{i}.value"], name=f"GroupQueryAttention_{i}", domain=MS, **attrs))
        a = linear(attn, _w(weights, p + "attn_output.weight"), p + "attn_output.weight_t")
        if s.sandwich_norm:
            a = norm(a, _w(weights, p + "post_attention_norm.weight"), p + "post_attention_norm.weight")
        h, residual = skip_norm(residual, a, _w(weights, p + "ffn_norm.weight"), p + "ffn_norm.weight")

        inter = s.intermediate_size
        gu = linear(h, np.concatenate([_w(weights, p + "ffn_gate.weight"), _w(weights, p + "ffn_up.weight")]),
                    p + "ffn_gate_up.weight_t")
        gate, up = g.op("Split", [gu, g.i64(inter, inter)], outputs=2, axis=-1)
        if s.activation == "silu":
            act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        else:   # tanh-approximated GELU == com.microsoft FastGelu
            act = ms("FastGelu", [gate])
        mlp = linear(g.op("Mul", [act, up]), _w(weights, p + "ffn_down.weight"), p + "ffn_down.weight_t")
        if s.sandwich_norm:
            mlp = norm(mlp, _w(weights, p + "post_ffw_norm.weight"), p + "post_ffw_norm.weight")
        if i + 1 < s.num_layers:
            nxt = f"blk.{i + 1}.attn_norm.weight"
            h, residual = skip_norm(residual, mlp, _w(weights, nxt), nxt)
        if progress:
            progress(i)

    # --- each row's last real position: index clamp(seqlens_k - (total - S), 0, S - 1) of the new tokens
    #     (prompt: the row's last real token even when right-padded; decode: 0)
    shape = g.op("Shape", ["input_ids"])
    batch = g.op("Gather", [shape, g.const(0, np.int64)], axis=0)
    seq = g.op("Gather", [shape, g.const(1, np.int64)], axis=0)
    total64 = g.op("Squeeze", [total_1d, g.i64(0)])
    last = g.op("Sub", [g.op("Cast", [seqlens_k], to=TensorProto.INT64), g.op("Sub", [total64, seq])])
    last = g.op("Min", [g.op("Max", [last, g.const(0, np.int64)]), g.op("Sub", [seq, g.const(1, np.int64)])])
    #     and the N - 1 before it (N = logits_to_keep, 1 unless a prompt is scored)
    keep = g.op("Squeeze", [g.init(LOGITS_TO_KEEP, np.array([1], np.int64)), g.i64(0)])
    back = g.op("Sub", [g.op("Range", [g.const(0, np.int64), keep, g.const(1, np.int64)]),
                        g.op("Sub", [keep, g.const(1, np.int64)])])                     # [N]: 1-N .. 0
    idx = g.op("Add", [g.op("Unsqueeze", [last, g.i64(1)]), g.op("Unsqueeze", [back, g.i64(0)])])
    idx = g.op("Max", [idx, g.const(0, np.int64)])                                      # [B, N]
    rows = g.op("Range", [g.const(0, np.int64), batch, g.const(1, np.int64)])
    flat = g.op("Add", [g.op("Unsqueeze", [g.op("Mul", [rows, seq]), g.i64(1)]), idx])  # [B, N]

    def last_rows(x: str) -> str:
        return g.op("Gather", [g.op("Reshape", [x, g.i64(-1, H)]), flat], axis=0)        # [B, N, H]

    x, _ = skip_norm(last_rows(residual), last_rows(mlp), _w(weights, "output_norm.weight"), "output_norm.weight")
    if s.tied_embeddings and not untie_lm_head:
        rows_shape = g.op("Shape", [flat])
        logits = g.op("Reshape", [g.op("Gemm", [g.op("Reshape", [x, g.i64(-1, H)]), embed_name], transB=1),
                                  g.op("Concat", [rows_shape, g.i64(s.vocab_size)], axis=0)])
    else:
        head = embed if s.tied_embeddings else _w(weights, "output.weight")
        logits = linear(x, head, "output.weight_t")
    if s.final_logit_softcap:
        cap = g.f32(s.final_logit_softcap)
        logits = g.op("Mul", [g.op("Tanh", [g.op("Div", [logits, cap])]), cap])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))

    kv_past = ["batch_size", kvh, "past_sequence_length", d]
    kv_present = ["batch_size", kvh, "present_sequence_length", d]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_past) for n in past_names(s.num_layers)] + [
        helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", LOGITS_TO_KEEP, s.vocab_size])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_present) for n in present_names(s.num_layers)]
    graph = helper.make_graph(g.nodes, f"{s.arch}_decoder_fused", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="nnhost-prepare", producer_version="1")
    model.ir_version = 10
    helper.set_model_props(model, {KV_LAYOUT_KEY: KV_LAYOUT, "nnhost.max_positions": str(max_positions)})
    return model
