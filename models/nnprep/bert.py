"""BERT encoder (safetensors) -> ONNX, built directly with onnx.helper (no torch).

Graph I/O (Hugging Face / Optimum feature-extraction convention):
  inputs  input_ids, attention_mask, token_type_ids : int64 [batch_size, sequence_length]
  output  last_hidden_state                         : float32 [batch_size, sequence_length, hidden]

Embeddings (word + sliced position table + token type) -> LayerNorm -> N layers of
self-attention (additive mask (1 - mask) * -10000) + residual + LayerNorm, FFN with exact
erf GELU + residual + LayerNorm. Opset 17 (LayerNormalization is standard there).
Position ids are a Slice of the position table to the sequence length (a Gather indexed by
Shape->Gather->Range trips ORT 1.32's optimizer).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from . import onnx_file
from .errors import PrepError

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
MASK_VALUE = -10000.0  # exp(-1e4) == 0 in float32, and an all-masked row still gives no NaN
_PREFIXES = ("bert.", "model.")


def load_bert(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json, weights with any 'bert.' prefix removed) from a HF BERT folder."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    raw = load_file(str(folder / "model.safetensors"))
    weights = {}
    for key, value in raw.items():
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                break
        weights[key] = value
    return config, weights


def check_config(config: dict) -> None:
    if config.get("model_type", "bert") != "bert":
        raise PrepError(f"bert converter: model_type is '{config.get('model_type')}', expected 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise PrepError(f"bert converter: hidden_act '{config.get('hidden_act')}' unsupported (only exact 'gelu')")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise PrepError("bert converter: only absolute position embeddings are supported")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise PrepError("bert converter: hidden_size is not a multiple of num_attention_heads")


class _Graph:
    """Tiny helper collecting nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self._n}", **attrs))
        return out


def _w(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        raise PrepError(f"bert converter: weight '{key}' missing from model.safetensors")
    return weights[key].astype(np.float32)


def build_bert_onnx(config: dict, weights: dict[str, np.ndarray], *, progress: bool = False) -> onnx.ModelProto:
    """Build the encoder graph from a HF BERT config and its (prefix-free) weights."""
    check_config(config)
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    g = _Graph()

    # shared constants
    zero = g.init("const_zero_1d", np.array([0], dtype=np.int64))
    axis0 = zero
    one_f = g.init("const_one_f", np.array(1.0, dtype=np.float32))
    mask_value = g.init("const_mask_value", np.array(MASK_VALUE, dtype=np.float32))
    scale = g.init("const_attn_scale", np.array(math.sqrt(head_dim), dtype=np.float32))
    split_heads = g.init("const_split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = g.init("const_merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    sqrt2 = g.init("const_sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    half = g.init("const_half", np.array(0.5, dtype=np.float32))

    def layer_norm(x: str, prefix: str) -> str:
        gamma = g.init(f"{prefix}.weight", _w(weights, f"{prefix}.weight"))
        beta = g.init(f"{prefix}.bias", _w(weights, f"{prefix}.bias"))
        return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)

    def linear(x: str, prefix: str) -> str:
        # HF Linear stores [out, in]; MatMul wants [in, out].
        w = g.init(f"{prefix}.weight_t", _w(weights, f"{prefix}.weight").T)
        b = g.init(f"{prefix}.bias", _w(weights, f"{prefix}.bias"))
        return g.op("Add", [g.op("MatMul", [x, w]), b])

    # --- embeddings
    word = g.init("embeddings.word_embeddings.weight", _w(weights, "embeddings.word_embeddings.weight"))
    pos = g.init("embeddings.position_embeddings.weight", _w(weights, "embeddings.position_embeddings.weight"))
    ttype = g.init("embeddings.token_type_embeddings.weight", _w(weights, "embeddings.token_type_embeddings.weight"))
    seq_len = g.op("Shape", ["input_ids"], "sequence_length_1d", start=1, end=2)      # [1]
    pos_rows = g.op("Slice", [pos, zero, seq_len, axis0], "position_embeddings")      # [S, H]
    x = g.op("Add", [g.op("Gather", [word, "input_ids"], axis=0), pos_rows])
    x = g.op("Add", [x, g.op("Gather", [ttype, "token_type_ids"], axis=0)])
    x = layer_norm(x, "embeddings.LayerNorm")

    # --- additive attention mask [B, 1, 1, S]: 0 for real tokens, -10000 for padding
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask_add = g.op("Mul", [g.op("Sub", [one_f, mask_f]), mask_value])
    mask_add = g.op("Unsqueeze", [mask_add, g.init("const_axes_1_2", np.array([1, 2], dtype=np.int64))],
                    "attention_mask_additive")

    for i in tqdm(range(layers), desc="bert layers", disable=None if progress else True, leave=False):
        p = f"encoder.layer.{i}"
        q = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.query"), split_heads])],
                 perm=[0, 2, 1, 3])                                                  # [B, h, S, d]
        k = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.key"), split_heads])],
                 perm=[0, 2, 3, 1])                                                  # [B, h, d, S]
        v = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.value"), split_heads])],
                 perm=[0, 2, 1, 3])                                                  # [B, h, S, d]
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), scale]), mask_add])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])       # [B, S, h, d]
        ctx = g.op("Reshape", [ctx, merge_heads])                                     # [B, S, H]
        attn = linear(ctx, f"{p}.attention.output.dense")
        x = layer_norm(g.op("Add", [attn, x]), f"{p}.attention.output.LayerNorm")

        h = linear(x, f"{p}.intermediate.dense")
        gelu = g.op("Mul", [g.op("Mul", [h, half]),
                            g.op("Add", [g.op("Erf", [g.op("Div", [h, sqrt2])]), one_f])])
        out = linear(gelu, f"{p}.output.dense")
        x = layer_norm(g.op("Add", [out, x]), f"{p}.output.LayerNorm")

    g.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name="output"))

    dims = ["batch_size", "sequence_length"]
    graph = helper.make_graph(
        g.nodes, "bert_encoder",
        [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in INPUTS],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, dims + [hidden])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nnhost-prepare", producer_version="1")
    model.ir_version = 8  # opset 17 <-> IR 8; loads in any ORT >= 1.12
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(src: Path, out_onnx: Path, log: Callable[[str], None] = print) -> dict:
    """Convert the HF BERT folder `src` into `out_onnx`; returns facts for nnhost.json."""
    log("loading model.safetensors + config.json")
    config, weights = load_bert(src)
    log(f"building ONNX graph: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"{config['num_attention_heads']} heads, opset {OPSET}")
    model = build_bert_onnx(config, weights, progress=True)
    onnx_file.save(model, out_onnx)
    log(f"wrote {out_onnx.name} and its weights ({onnx_file.stored_bytes(out_onnx) / 1e6:.1f} MB)")
    return {"dimensions": int(config["hidden_size"]),
            "max_position_embeddings": int(config.get("max_position_embeddings", 512))}
