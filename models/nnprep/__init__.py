"""nnprep: fetch, convert and verify the models nnhost serves (see models/prepare.py)."""

# Bump when a converter or the output layout changes, so cached outputs are rebuilt.
# 2: weights in NAME.onnx.data beside each graph (onnx_file.save)
TOOL_VERSION = 2
# Bump when the decoder graphs or their variants change: rebuilds decoder folders only (not embeddings).
# 2: + onnx/model_fused.onnx (variant "int4-fused", GroupQueryAttention), nnhost.kv_layout metadata
# 3: nnhost.json default_variant is what the host serves
# 4: logits_to_keep (an overridable initializer, default 1): the last N positions' logits, to score prompts
DECODER_GRAPHS = 4
