"""Decoder-only transformer (llama, gemma3) -> ONNX with KV cache, built with onnx.helper (no torch).

Graph I/O (the Hugging Face onnx-community / Optimum / transformers.js layout):
  inputs  input_ids                   int64   [batch_size, sequence_length]
          attention_mask              int64   [batch_size, total_sequence_length]  (past + new; 0 = padding)
          position_ids                int64   [batch_size, sequence_length]
          past_key_values.{i}.key     float32 [batch_size, kv_heads, past_sequence_length, head_dim]
          past_key_values.{i}.value   (same)
          logits_to_keep              int64   [1]  optional (an overridable initializer, default 1)
  outputs logits                      float32 [batch_size, logits_to_keep, vocab]   -- the LAST positions only
          present.{i}.key / .value    float32 [batch_size, kv_heads, total_sequence_length, head_dim]
An empty cache is fed as past tensors of shape [batch, kv_heads, 0, head_dim].

metadata_props nnhost.kv_layout = "left_padded".
Attention is causal over cache indices (past then new tokens) and masked by attention_mask, so left
padding (mask 0) does not change the real tokens; gemma3's sliding layers see only the last
`sliding_window` positions. RoPE uses position_ids (HF rotate-half convention). GQA without copying
K/V: the query heads of one KV group are stacked along the sequence axis. Plain ONNX ops, opset 21;
RMSNorm is written Pow/ReduceMean/Add/Sqrt/Div/Mul so that ORT fuses it.

Weights: GGUF names, [out, in] float32 (see gguf_load); initializers keep those names. With `untie_lm_head` the LM head is a MatMul
on its own [hidden, vocab] copy (for the int4 quantizer); otherwise a tied head is a Gemm (transB) on
the embedding table, so the fp32 file stores the table once.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import PrepError
from .gguf_load import DecoderSpec

OPSET = 21   # int4 GatherBlockQuantized data (UINT4) needs IR 10 / opset 21
MASK_VALUE = -1e9   # finite: a fully masked (padding) row gives a uniform softmax, not NaN
INPUTS = ("input_ids", "attention_mask", "position_ids")
INT64_MAX = np.iinfo(np.int64).max
LOGITS_TO_KEEP = "logits_to_keep"   # Hugging Face's name for the same knob
KV_LAYOUT_KEY = "nnhost.kv_layout"   # ONNX metadata_props: "left_padded" here, "ragged" in decoder_fused.py


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict = {}

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype) -> str:
        """A small shared constant initializer."""
        arr = np.array(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", arr)
        return self._consts[key]

    def i64(self, *values) -> str:
        return self.const(list(values), np.int64)

    def f32(self, value: float) -> str:
        return self.const(value, np.float32)

    def op(self, op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs):
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        outs = [base] if outputs == 1 else [f"{base}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if outputs == 1 else outs


def _w(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        raise PrepError(f"decoder converter: tensor '{key}' missing from the GGUF")
    return weights[key].astype(np.float32, copy=False)


def build_decoder_onnx(spec: DecoderSpec, weights: dict[str, np.ndarray], *, untie_lm_head: bool = False,
                       progress: Callable[[int], None] | None = None) -> onnx.ModelProto:
    s = spec
    H, nh, kvh, d = s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim
    rep = s.kv_groups
    g = _Graph()
    f32 = g.f32

    def rms_norm(x: str, weight: np.ndarray, name: str) -> str:
        var = g.op("ReduceMean", [g.op("Pow", [x, f32(2.0)]), g.i64(-1)], keepdims=1)
        y = g.op("Div", [x, g.op("Sqrt", [g.op("Add", [var, f32(s.rms_eps)])])])
        return g.op("Mul", [y, g.init(name, weight.astype(np.float32))])

    def linear(x: str, w: np.ndarray, name: str) -> str:
        return g.op("MatMul", [x, g.init(name, np.ascontiguousarray(w.T))])   # [in, out]

    # --- shapes and shared constants
    seq = g.op("Shape", ["input_ids"], "sequence_length_1d", start=1, end=2)
    past = g.op("Shape", ["past_key_values.0.key"], "past_sequence_length_1d", start=2, end=3)
    total = g.op("Add", [past, seq], "total_sequence_length_1d")

    # --- attention masks [B, 1, S, T] (additive), tiled to [B, 1, rep*S, T] for grouped queries
    zero_s, one_s = g.const(0, np.int64), g.const(1, np.int64)
    past_s = g.op("Squeeze", [past, g.i64(0)])
    total_s = g.op("Squeeze", [total, g.i64(0)])
    q_idx = g.op("Range", [past_s, total_s, one_s], "query_index")                # [S]
    k_idx = g.op("Range", [zero_s, total_s, one_s], "key_index")                  # [T]
    dist = g.op("Sub", [g.op("Unsqueeze", [q_idx, g.i64(1)]), g.op("Unsqueeze", [k_idx, g.i64(0)])])  # [S, T]
    causal = g.op("GreaterOrEqual", [dist, zero_s])
    keep = g.op("Cast", ["attention_mask"], to=TensorProto.BOOL)
    keep = g.op("Unsqueeze", [keep, g.i64(1, 2)])                                  # [B, 1, 1, T]

    def additive(allowed: str, name: str) -> str:
        m = g.op("Where", [g.op("And", [allowed, keep]), f32(0.0), f32(MASK_VALUE)])  # [B, 1, S, T]
        return g.op("Tile", [m, g.i64(1, 1, rep, 1)], name) if rep > 1 else m

    mask_full = additive(causal, "attention_bias_full")
    mask_local = None
    if s.sliding_layers:
        window = g.op("Less", [dist, g.const(s.sliding_window, np.int64)])
        mask_local = additive(g.op("And", [causal, window]), "attention_bias_sliding")

    # --- rotary tables cos/sin [B, S, 1, d] from position_ids (rotate-half convention)
    pos = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), g.i64(2)])  # [B, S, 1]

    def rope_tables(theta: float, scaling: float, tag: str) -> tuple[str, str]:
        inv = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d)) / scaling
        freqs = g.op("Mul", [pos, g.init(f"rope_inv_freq_{tag}", inv.astype(np.float32))])   # [B, S, d/2]
        emb = g.op("Unsqueeze", [g.op("Concat", [freqs, freqs], axis=-1), g.i64(2)])        # [B, S, 1, d]
        return g.op("Cos", [emb], f"rope_cos_{tag}"), g.op("Sin", [emb], f"rope_sin_{tag}")

    rope_global = rope_tables(s.rope_theta, s.rope_scaling, "global")
    rope_local = rope_tables(s.rope_theta_local, 1.0, "local") if s.sliding_layers else None

    def rotate(x: str, tables: tuple[str, str]) -> str:
        cos, sin = tables
        x1, x2 = g.op("Split", [x, g.i64(d // 2, d // 2)], outputs=2, axis=-1)
        rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])])

    # --- embeddings
    embed = _w(weights, "token_embd.weight")                                          # [V, H]
    if embed.shape != (s.vocab_size, H):
        raise PrepError(f"decoder converter: token_embd is {embed.shape}, expected {(s.vocab_size, H)}")
    embed_name = g.init("token_embd.weight", embed)
    x = g.op("Gather", [embed_name, "input_ids"], axis=0)
    if s.embed_scale:
        x = g.op("Mul", [x, f32(s.embed_scale)])

    for i in range(s.num_layers):
        p = f"blk.{i}."
        sliding = i in s.sliding_layers
        h = rms_norm(x, _w(weights, p + "attn_norm.weight"), p + "attn_norm.weight")
        wq = _w(weights, p + "attn_q.weight")
        wk, wv = _w(weights, p + "attn_k.weight"), _w(weights, p + "attn_v.weight")
        if not s.qk_norm:
            wq = wq * np.float32(s.query_scale)     # a power of two here: exact
        qkv = linear(h, np.concatenate([wq, wk, wv], axis=0), p + "attn_qkv.weight_t")
        qkv = g.op("Reshape", [qkv, g.i64(0, 0, nh + 2 * kvh, d)])                    # [B, S, nh+2kvh, d]
        qk, v = g.op("Split", [qkv, g.i64(nh + kvh, kvh)], outputs=2, axis=2)
        if s.qk_norm:
            qn = _w(weights, p + "attn_q_norm.weight") * np.float32(s.query_scale)
            kn = _w(weights, p + "attn_k_norm.weight")
            w_qk = np.concatenate([np.tile(qn, (nh, 1)), np.tile(kn, (kvh, 1))])       # [nh+kvh, d]
            qk = rms_norm(qk, w_qk, p + "attn_qk_norm.weight")
        qk = rotate(qk, rope_local if sliding else rope_global)
        q, k = g.op("Split", [qk, g.i64(nh, kvh)], outputs=2, axis=2)
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])                                 # [B, nh, S, d]
        k = g.op("Transpose", [k], perm=[0, 2, 1, 3])                                 # [B, kvh, S, d]
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        k = g.op("Concat", [f"past_key_values.{i}.key", k], f"present.{i}.key", axis=2)
        v = g.op("Concat", [f"past_key_values.{i}.value", v], f"present.{i}.value", axis=2)
        qg = g.op("Reshape", [q, g.i64(0, kvh, -1, d)])                               # [B, kvh, rep*S, d]
        scores = g.op("MatMul", [qg, g.op("Transpose", [k], perm=[0, 1, 3, 2])])      # [B, kvh, rep*S, T]
        scores = g.op("Add", [scores, mask_local if sliding else mask_full])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Reshape", [g.op("MatMul", [probs, v]), g.i64(0, nh, -1, d)])        # [B, nh, S, d]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.i64(0, 0, nh * d)])
        attn = linear(ctx, _w(weights, p + "attn_output.weight"), p + "attn_output.weight_t")
        if s.sandwich_norm:
            attn = rms_norm(attn, _w(weights, p + "post_attention_norm.weight"),
                            p + "post_attention_norm.weight")
        x = g.op("Add", [x, attn])

        h = rms_norm(x, _w(weights, p + "ffn_norm.weight"), p + "ffn_norm.weight")
        inter = s.intermediate_size
        gu = linear(h, np.concatenate([_w(weights, p + "ffn_gate.weight"), _w(weights, p + "ffn_up.weight")]),
                    p + "ffn_gate_up.weight_t")
        gate, up = g.op("Split", [gu, g.i64(inter, inter)], outputs=2, axis=-1)
        if s.activation == "silu":
            act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        else:  # gelu, tanh approximation
            inner = g.op("Mul", [g.op("Add", [gate, g.op("Mul", [g.op("Pow", [gate, f32(3.0)]), f32(0.044715)])]),
                                 f32(float(np.sqrt(2.0 / np.pi)))])
            act = g.op("Mul", [g.op("Mul", [gate, f32(0.5)]), g.op("Add", [g.op("Tanh", [inner]), f32(1.0)])])
        mlp = linear(g.op("Mul", [act, up]), _w(weights, p + "ffn_down.weight"), p + "ffn_down.weight_t")
        if s.sandwich_norm:
            mlp = rms_norm(mlp, _w(weights, p + "post_ffw_norm.weight"),
                           p + "post_ffw_norm.weight")
        x = g.op("Add", [x, mlp])
        if progress:
            progress(i)

    # --- the last N positions only (N = logits_to_keep, 1 unless a prompt is scored) -> final norm -> LM head
    start = g.op("Neg", [g.init(LOGITS_TO_KEEP, np.array([1], np.int64))])
    x = g.op("Slice", [x, start, g.i64(INT64_MAX), g.i64(1)])                           # [B, N, H]
    x = rms_norm(x, _w(weights, "output_norm.weight"), "output_norm.weight")
    if s.tied_embeddings and not untie_lm_head:
        flat = g.op("Reshape", [x, g.i64(-1, H)])
        logits = g.op("Gemm", [flat, embed_name], transB=1)                           # [B*N, V]
        rows_shape = g.op("Shape", [x], start=0, end=2)
        logits = g.op("Reshape", [logits, g.op("Concat", [rows_shape, g.i64(s.vocab_size)], axis=0)])
    else:
        head = embed if s.tied_embeddings else _w(weights, "output.weight")
        logits = linear(x, head, "output.weight_t")
    if s.final_logit_softcap:
        cap = f32(s.final_logit_softcap)
        logits = g.op("Mul", [g.op("Tanh", [g.op("Div", [logits, cap])]), cap])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))

    kv_past = ["batch_size", kvh, "past_sequence_length", d]
    kv_total = ["batch_size", kvh, "total_sequence_length", d]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_past) for n in past_names(s.num_layers)] + [
        helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", LOGITS_TO_KEEP, s.vocab_size])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_total) for n in present_names(s.num_layers)]
    graph = helper.make_graph(g.nodes, f"{s.arch}_decoder", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nnhost-prepare", producer_version="1")
    model.ir_version = 10
    helper.set_model_props(model, {KV_LAYOUT_KEY: "left_padded"})
    return model
