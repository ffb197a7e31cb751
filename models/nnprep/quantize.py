"""Weight-only quantization of a decoder graph (com.microsoft MatMulNBits, block 32, accuracy_level 4):
int4 with block offsets (below), or, for models whose GGUF holds mostly 5- to 8-bit tensors, symmetric
8-bit (`weight_bits = 8`, at the end of this docstring).

Why not plain round-to-nearest with integer zero points (ORT's MatMulNBitsQuantizer default): the GGUF
weights are already 4/5-bit block-quantized; re-quantizing them onto ORT's grid (which must contain 0
at an integer zero point) adds an error as large as the GGUF's own. Measured on SmolLM2 (fp32 = the
GGUF exactly): perplexity 10.9 -> 15.5, top-1 agreement 70 %. Instead each block of 32 weights gets
GGML Q4_1's form  w = scale * q + min  (q = 0..15, from the block's min/max), which reproduces Q4_1
weights exactly and is a finer fit for the others. MatMulNBits stores scale * (q - 8) (no zero-point
input: its fast symmetric path); the remainder (min + 8 * scale) per block is added as
    y += blocksum(x) @ offsets        blocksum(x) = sum of x over each block of 32 inputs ([.., K/32])
a small float32 MatMul (K/32 x N, 1/32 of the weight). Teacher-forced on a 75-token text vs fp32:
  SmolLM2 (Q4_1 GGUF):   top-1 agreement 97 %, mean KL 0.003, ppl 10.9 -> 10.8   (RTN: 70 %, 0.46, 15.5)
  Gemma 3 (Q5_0/Q6_K/Q8_0 mostly, so 4 bits lose): 84 %, KL 0.12, ppl 10.3 -> 11.9 (RTN: 69 %, 0.23, 13.6)
Decode is ~20 % slower than plain RTN (SmolLM2 ~180 vs ~220 tok/s, quiet machine).

The LM head is the most sensitive matrix: it gets 8-bit MatMulNBits (asymmetric, uint8 zero points)
by default. The embedding table becomes GatherBlockQuantized (int4, block 32) via ORT's quantizer.
Activation x activation MatMuls (attention) have no constant weight and stay float32.

weight_bits = 8: every weight, the LM head and the embedding table as symmetric 8-bit blocks of 32
(scale = max |w| / 127, MatMulNBits' and GatherBlockQuantized's default zero point 128). That
reproduces GGUF Q8_0 blocks exactly (ggml's d is max |w| / 127) and others to half a step of 255 levels.
Gemma 3 270M's GGUF (Q4_K_M: mostly Q5_0, Q6_K and Q8_0 tensors) lost much in 4 bits; teacher-forced
against fp32 (400 tokens): int4 top-1 agreement 0.665, mean KL 0.444; 8-bit 0.970, 0.0046, and a
decode step as fast (8.8-9.2 ms both: the symmetric 8-bit kernel needs no offset MatMuls).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 32
ACCURACY_LEVEL = 4
LM_HEAD = "output.weight_t"
EMBEDDING = "token_embd.weight"


def pack_q4_offset(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] MatMul weight -> (B uint8 [N, K/32, 16], scales [N*K/32], offsets [K/32, N]) with
    w ≈ scale * (q - 8) + offset per block of 32 along K; scale and min from the block's min/max
    (exact for Q4_1 blocks). A least-squares refit of scale/min (k-quant style) was tried on Gemma's
    5/6/8-bit sources: no better (KL 0.120 vs 0.122) and 3x slower, so it is not done."""
    K, N = w_t.shape
    nb = K // BLOCK
    w = np.ascontiguousarray(w_t.T).reshape(N, nb, BLOCK)
    lo, hi = w.min(-1), w.max(-1)
    scale = ((hi - lo) / np.float32(15)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint((w - lo[..., None]) / scale[..., None]), 0, 15).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    offsets = (lo + 8 * scale).astype(np.float32)
    return packed, scale.reshape(-1), np.ascontiguousarray(offsets.T)


def pack_q8(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] -> (B uint8 [N, K/32, 32], scales [N*K/32], zero points uint8 [N*K/32]); asymmetric."""
    K, N = w_t.shape
    w = np.ascontiguousarray(w_t.T).reshape(N, K // BLOCK, BLOCK)
    lo, hi = np.minimum(w.min(-1), 0), np.maximum(w.max(-1), 0)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    scale[scale == 0] = 1.0
    zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
    q = np.clip(np.rint(w / scale[..., None]) + zp[..., None], 0, 255).astype(np.uint8)
    return q, scale.reshape(-1), zp.reshape(-1)


def pack_q8_symmetric(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[R, C] rows of blocks of 32 along C -> (uint8 [R, C/32, 32] = q + 128, scales [R, C/32]) with
    w ≈ scale * q, scale = max |w| / 127 per block: exact for GGUF Q8_0 blocks."""
    R, C = w.shape
    b = w.reshape(R, C // BLOCK, BLOCK)
    scale = (np.abs(b).max(-1) / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(b / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale


def quantize_weights(model: onnx.ModelProto, *, embedding: bool = True, lm_head_bits: int = 8,
                     weight_bits: int = 4) -> onnx.ModelProto:
    """Rewrite every MatMul with a constant [K, N] weight (K % 32 == 0). weight_bits 4: int4 with offsets,
    lm_head_bits 4, 8 or 0 (= float32) for the head; weight_bits 8: symmetric 8-bit, head included."""
    if weight_bits not in (4, 8):
        raise ValueError(f"weight_bits must be 4 or 8, not {weight_bits}")
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, drop, extra, block_sums = [], set(), [], {}

    def add(array: np.ndarray, name: str) -> str:
        extra.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    for n in g.node:
        weight = n.input[1] if n.op_type == "MatMul" and len(n.input) == 2 else None
        if weight not in inits or len(inits[weight].dims) != 2 or inits[weight].dims[0] % BLOCK:
            nodes.append(n)
            continue
        is_head = weight == LM_HEAD
        bits = lm_head_bits if is_head and weight_bits == 4 else weight_bits
        if bits == 0:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[weight])
        K, N = w.shape
        x = n.input[0]
        drop.add(weight)
        attrs = dict(K=K, N=N, bits=bits, block_size=BLOCK, accuracy_level=ACCURACY_LEVEL)
        if weight_bits == 8:
            q, s = pack_q8_symmetric(np.ascontiguousarray(w.T))
            nodes.append(helper.make_node("MatMulNBits", [x, add(q, weight + "_Q8"), add(s.reshape(-1), weight + "_scales")],
                                          list(n.output), name=n.name + "_Q8", domain="com.microsoft", **attrs))
            continue
        if bits == 8:
            q, s, zp = pack_q8(w)
            nodes.append(helper.make_node("MatMulNBits", [x, add(q, weight + "_Q8"), add(s, weight + "_scales"),
                                                          add(zp, weight + "_zero_points")],
                                          list(n.output), name=n.name + "_Q8", domain="com.microsoft", **attrs))
            continue
        q, s, offsets = pack_q4_offset(w)
        if x not in block_sums:
            blocks = n.name + "_blocks"
            nodes.append(helper.make_node("Reshape", [x, add(np.array([0, 0, K // BLOCK, BLOCK], np.int64), blocks + "_shape")],
                                          [blocks], name=blocks))
            nodes.append(helper.make_node("ReduceSum", [blocks, add(np.array([-1], np.int64), blocks + "_axis")],
                                          [x + "_block_sums"], name=n.name + "_block_sums", keepdims=0))
            block_sums[x] = x + "_block_sums"
        y = n.output[0]
        nodes.append(helper.make_node("MatMulNBits", [x, add(q, weight + "_Q4"), add(s, weight + "_scales")],
                                      [y + "_q4"], name=n.name + "_Q4", domain="com.microsoft", **attrs))
        nodes.append(helper.make_node("MatMul", [block_sums[x], add(offsets, weight + "_offsets")], [y + "_offset"],
                                      name=n.name + "_offset"))
        nodes.append(helper.make_node("Add", [y + "_q4", y + "_offset"], [y], name=n.name + "_add"))

    kept = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept + extra)
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    if embedding and weight_bits == 8:
        return _quantize_embedding_q8(model)
    if embedding:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        # the quantizer logs one INFO line per node; keep the tool's output readable
        logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
        gathers = [n.name for n in g.node if n.op_type == "Gather" and n.input[0] == EMBEDDING]
        qz = MatMulNBitsQuantizer(model, bits=4, block_size=BLOCK, is_symmetric=False,
                                  accuracy_level=ACCURACY_LEVEL, op_types_to_quantize=("Gather",),
                                  nodes_to_include=gathers, quant_axes=(("Gather", 1),))
        qz.process()
        model = qz.model.model
    return model


def _quantize_embedding_q8(model: onnx.ModelProto) -> onnx.ModelProto:
    """The embedding table's Gather -> 8-bit symmetric GatherBlockQuantized (blocks of 32 along the row)."""
    g = model.graph
    table = next((t for t in g.initializer if t.name == EMBEDDING), None)
    gathers = [n for n in g.node if n.op_type == "Gather" and n.input[0] == EMBEDDING]
    if table is None or not gathers or table.dims[1] % BLOCK:
        return model
    rows, cols = table.dims
    q, scales = pack_q8_symmetric(numpy_helper.to_array(table))
    for n in gathers:
        n.op_type, n.domain = "GatherBlockQuantized", "com.microsoft"
        n.input[:] = [EMBEDDING + "_Q8", n.input[1], EMBEDDING + "_scales"]
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("bits", 8), helper.make_attribute("block_size", BLOCK),
                            helper.make_attribute("gather_axis", 0), helper.make_attribute("quantize_axis", 1)])
    kept = [t for t in g.initializer if t.name != EMBEDDING]
    del g.initializer[:]
    g.initializer.extend(kept + [numpy_helper.from_array(q.reshape(rows, cols), EMBEDDING + "_Q8"),
                                 numpy_helper.from_array(scales, EMBEDDING + "_scales")])
    return model
