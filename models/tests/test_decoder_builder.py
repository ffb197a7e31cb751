"""Fast tests of the GGUF decoder converter on tiny random GGUF files (no real weights needed)."""
import numpy as np
import onnx
import pytest

from conftest import ort_session
from reference_decoder import forward, load_gguf, write_tiny_gguf

from nnprep import quantize
from nnprep.decoder import build_decoder_onnx, past_names
from nnprep.errors import PrepError
from nnprep.gguf_load import GGUFModel, unpermute
from nnprep.gguf_tokenizer import build_tokenizer
from nnprep.manifest import parse_manifest


class Tiny:
    def __init__(self, tmp, arch, quantized=False):
        self.path = tmp / f"{arch}.gguf"
        write_tiny_gguf(self.path, arch, layers=6 if arch == "gemma3" else 2)
        self.g = GGUFModel(self.path)
        self.spec = self.g.spec
        model = build_decoder_onnx(self.spec, self.g.weights(), untie_lm_head=quantized)
        if quantized:
            model = quantize.quantize_weights(model, embedding=False, lm_head_bits=8)
        onnx.save_model(model, str(tmp / f"{arch}.onnx"))
        self.model, self.sess = model, ort_session(tmp / f"{arch}.onnx")
        self.meta, self.W = load_gguf(self.path)

    def run(self, ids, mask=None, positions=None, past=None, keep=None):
        ids = np.asarray(ids, np.int64)
        s = self.spec
        past = past or {n: np.zeros((ids.shape[0], s.num_kv_heads, 0, s.head_dim), np.float32)
                        for n in past_names(s.num_layers)}
        plen = next(iter(past.values())).shape[2]
        mask = np.ones((ids.shape[0], plen + ids.shape[1]), np.int64) if mask is None else np.asarray(mask, np.int64)
        if positions is None:
            positions = np.clip(np.cumsum(mask, 1) - 1, 0, None)[:, plen:]
        extra = {} if keep is None else {"logits_to_keep": np.array([keep], np.int64)}
        out = self.sess.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past, **extra})
        names = [o.name.replace("present.", "past_key_values.") for o in self.sess.get_outputs()]
        return out[0], dict(zip(names[1:], out[1:]))


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request, tmp_path_factory):
    return Tiny(tmp_path_factory.mktemp(request.param), request.param)


IDS = [5, 40, 7, 99, 120, 3, 66, 200, 17, 8, 150, 42]   # longer than the gemma window (4)


def test_io_contract(tiny):
    s = tiny.spec
    ins = [(i.name, i.shape) for i in tiny.sess.get_inputs()]
    assert ins[:3] == [("input_ids", ["batch_size", "sequence_length"]),
                       ("attention_mask", ["batch_size", "total_sequence_length"]),
                       ("position_ids", ["batch_size", "sequence_length"])]
    assert ins[3] == ("past_key_values.0.key", ["batch_size", s.num_kv_heads, "past_sequence_length", s.head_dim])
    assert len(ins) == 3 + 2 * s.num_layers
    outs = [(o.name, o.shape) for o in tiny.sess.get_outputs()]
    assert outs[0] == ("logits", ["batch_size", "logits_to_keep", s.vocab_size])   # last positions only
    assert [i.name for i in tiny.model.graph.input][-1] == "logits_to_keep"             # overridable, default 1
    assert outs[1] == ("present.0.key", ["batch_size", s.num_kv_heads, "total_sequence_length", s.head_dim])


def test_matches_numpy_reference(tiny):
    """Every prefix's last logits equal the independent float64 forward (llama: pair-RoPE on the
    GGUF's permuted Q/K, so this also checks the un-permutation; gemma3: sliding window 4)."""
    want = forward(tiny.meta, tiny.W, IDS)
    for n in (1, 3, len(IDS)):
        got, _ = tiny.run([IDS[:n]])
        assert got.shape == (1, 1, tiny.spec.vocab_size)
        np.testing.assert_allclose(got[0, 0], want[n - 1], atol=2e-4 * np.abs(want).max())


def test_logits_to_keep_gives_every_positions_logits(tiny):
    """A scored prompt asks for the logits of its last N positions: each equals the reference's for that
    prefix, on top of a cache and with left padding as in a batch."""
    want = forward(tiny.meta, tiny.W, IDS)
    got, past = tiny.run([IDS[:5]], keep=5)
    assert got.shape == (1, 5, tiny.spec.vocab_size)
    np.testing.assert_allclose(got[0], want[:5], atol=2e-4 * np.abs(want).max())
    rest = len(IDS) - 5
    got, _ = tiny.run([IDS[5:]], positions=[list(range(5, len(IDS)))], past=past, keep=rest)
    np.testing.assert_allclose(got[0], want[5:], atol=2e-4 * np.abs(want).max())
    padded, _ = tiny.run([[0, 0] + IDS[:4]], mask=[[0, 0, 1, 1, 1, 1]], keep=4)
    np.testing.assert_allclose(padded[0], want[:4], atol=2e-4 * np.abs(want).max())


def test_kv_cache_steps_equal_full_prefill(tiny):
    full, present = tiny.run([IDS])
    logits, past = tiny.run([IDS[:5]])
    for i in range(5, len(IDS)):
        logits, past = tiny.run([IDS[i:i + 1]], positions=[[i]], past=past)
    assert np.abs(logits - full).max() <= 1e-5 * np.abs(full).max()
    for k, v in past.items():
        np.testing.assert_allclose(v, present[k], atol=1e-5)


def test_left_padding_and_batching(tiny):
    short = IDS[:7]
    single_long, _ = tiny.run([IDS])
    single_short, _ = tiny.run([short])
    pad = len(IDS) - len(short)
    batch, past = tiny.run([IDS, [0] * pad + short], mask=[[1] * len(IDS), [0] * pad + [1] * len(short)])
    assert np.abs(batch[0] - single_long[0]).max() <= 1e-5
    assert np.abs(batch[1] - single_short[0]).max() <= 1e-5
    # one more cached step for both rows
    step, _ = tiny.run([[9], [9]], mask=[[1] * (len(IDS) + 1), [0] * pad + [1] * (len(short) + 1)],
                       positions=[[len(IDS)], [len(short)]], past=past)
    ref_long, _ = tiny.run([IDS + [9]])
    ref_short, _ = tiny.run([short + [9]])
    assert np.abs(step[0] - ref_long[0]).max() <= 1e-5 and np.abs(step[1] - ref_short[0]).max() <= 1e-5


def test_sliding_window_layers(tiny):
    s = tiny.spec
    if s.arch != "gemma3":
        assert s.sliding_layers == () and s.embed_scale is None and s.qk_norm is False
        return
    assert s.sliding_layers == (0, 1, 2, 3, 4) and s.sliding_window == 4
    assert s.rope_theta == 1e6 and s.rope_theta_local == 10000.0 and s.query_scale == 1 / np.sqrt(32)


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3 * 8, 5))
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    permuted = w.reshape(3, 2, 4, 5).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(unpermute(permuted, 3), w)


def test_q4_offset_packing_is_exact_for_q4_1_blocks():
    """Blocks of the form d * q + m (GGML Q4_1, q = 0..15 with 0 and 15 present) come back exactly."""
    rng = np.random.default_rng(2)
    K, N = 64, 24
    q = rng.integers(0, 16, size=(N, K // 32, 32))
    q[..., 0], q[..., 1] = 0, 15
    d = rng.uniform(0.01, 0.1, size=(N, K // 32, 1)).astype(np.float32)
    m = rng.uniform(-0.5, 0.5, size=(N, K // 32, 1)).astype(np.float32)
    w = (d * q + m).astype(np.float32).reshape(N, K).T                  # MatMul layout [K, N]
    packed, scales, offsets = quantize.pack_q4_offset(w)
    lo, hi = packed & 15, packed >> 4
    qq = np.stack([lo, hi], -1).reshape(N, K // 32, 32).astype(np.float32)
    back = scales.reshape(N, K // 32, 1) * (qq - 8) + offsets.T[..., None]
    np.testing.assert_allclose(back.reshape(N, K).T, w, atol=1e-6)


def test_quantized_graph_runs_and_stays_close(tmp_path):
    t = Tiny(tmp_path, "llama", quantized=True)
    ops = {n.op_type for n in t.model.graph.node}
    assert "MatMulNBits" in ops and not any(n.op_type == "MatMul" and n.input[1].endswith("weight_t")
                                            for n in t.model.graph.node)
    got, _ = t.run([IDS])
    want = forward(t.meta, t.W, IDS)[-1]
    cos = float(got[0, 0] @ want / np.linalg.norm(got[0, 0]) / np.linalg.norm(want))
    assert cos > 0.9, cos   # random Gaussian weights: int4 is coarse; a miswired offset gives ~0


def test_tiny_tokenizers(tiny):
    tok, facts = build_tokenizer(tiny.g)
    if tiny.spec.arch == "llama":     # gpt2 byte-level BPE with merges
        assert facts["bos_token"] == "<|im_start|>" and facts["add_bos_token"] is False
        assert tok.encode("abc a").tokens == ["abc", "Ġa"]
        assert tok.encode("<|im_end|>x").ids[0] == 2
    else:                             # SentencePiece BPE: merges from the vocabulary, byte fallback
        assert facts["bos_token"] == "<bos>" and facts["add_bos_token"] is True
        enc = tok.encode("abc a  \n€")
        assert enc.tokens[:4] == ["<bos>", "abc", "▁a", "▁▁"]
        assert enc.tokens[4] == "\n" and enc.tokens[5:] == ["<0xE2>", "<0x82>", "<0xAC>"]
        assert tok.decode(enc.ids, skip_special_tokens=True) == "abc a  \n€"
        assert tok.token_to_id("<end_of_turn>") == tiny.g.array("tokens").index("<end_of_turn>")


DECODER_MANIFEST = '''name = "x"
kind = "completion"
converter = "gguf"
[source]
join = "m.gguf"
[[source.parts]]
pypi = "a==1"
path = "a/data"
[[source.parts]]
pypi = "b==1"
path = "b/data"
[decoder]
gguf = "m.gguf"
'''


def test_decoder_manifest_parses():
    m = parse_manifest(DECODER_MANIFEST)
    assert m.kind == "completion" and [p.pypi for p in m.source.parts] == ["a==1", "b==1"]
    assert m.source.join == "m.gguf" and m.decoder.lm_head_bits == 8 and m.decoder.max_context == 8192
    with pytest.raises(PrepError, match="exactly one"):
        parse_manifest(DECODER_MANIFEST.replace('join = "m.gguf"', 'join = "m.gguf"\npypi = "c==1"'))
    with pytest.raises(PrepError, match="missing key 'decoder'"):
        parse_manifest(DECODER_MANIFEST.split("[decoder]")[0])
    with pytest.raises(PrepError, match="lm_head_bits"):
        parse_manifest(DECODER_MANIFEST + "lm_head_bits = 3\n")
    with pytest.raises(PrepError, match="needs a chat_template"):
        parse_manifest(DECODER_MANIFEST.replace('"completion"', '"chat"') + 'chat_template = "none"\n')
