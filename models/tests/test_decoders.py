"""Tests of the real prepared decoders (smollm2-135m-instruct, gemma-3-270m); need `models/prepare.py`.

Numbers (agreement, KL, tok/s) are printed: run with `pytest -s` to see them.
"""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import CACHE, MODELS, PREPARED, assert_weights_beside
from reference_decoder import forward, load_gguf

from nnprep.checksums import verify_folder
from nnprep.manifest import load_manifest
from nnprep.verify_decoder import Decoder, RaggedDecoder, render_chat

NAMES = ("smollm2-135m-instruct", "gemma-3-270m")
TEXT = ("The history of the city begins in the third century BC, when a Celtic people settled on an island in "
        "the river. Over the following centuries the settlement grew into a trading town, and by the Middle Ages "
        "it had become one of the largest cities in Europe, famous for its university, its cathedral and its "
        "markets. Today it is known for art, fashion and food.")


class Model:
    def __init__(self, name):
        self.name = name
        self.dir = PREPARED / name
        if not (self.dir / "nnhost.json").is_file():
            pytest.skip(f"{self.dir} is not prepared; run: .venv/bin/python models/prepare.py")
        self.meta = json.loads((self.dir / "nnhost.json").read_text())
        self.manifest = load_manifest(MODELS / "manifests" / f"{name}.toml")
        self.tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.tok_config = json.loads((self.dir / "tokenizer_config.json").read_text())
        self._int4 = self._fp32 = self._fused = None

    @property
    def int4(self):
        self._int4 = self._int4 or Decoder(self.dir, "onnx/model.onnx", threads=2)
        return self._int4

    @property
    def fused(self):
        self._fused = self._fused or RaggedDecoder.from_folder(self.dir, "onnx/model_fused.onnx", threads=2)
        return self._fused

    @property
    def fp32(self):
        self._fp32 = self._fp32 or Decoder(self.dir, "onnx/model_fp32.onnx")
        return self._fp32

    def gguf(self):
        src = CACHE / "sources"
        hits = sorted(src.glob(f"*/{self.manifest.decoder.gguf}")) if src.is_dir() else []
        if not hits:
            pytest.skip(f"{self.manifest.decoder.gguf} not in {src}")
        return hits[0]

    def chat_ids(self, text):
        rendered = render_chat(self.tok_config["chat_template"], [{"role": "user", "content": text}],
                               self.tok_config.get("bos_token"), self.tok_config.get("eos_token"))
        return self.tok.encode(rendered, add_special_tokens=False).ids


_models = {}


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    if request.param not in _models:
        _models[request.param] = Model(request.param)
    return _models[request.param]


def smol():
    return _models.get(NAMES[0]) or _models.setdefault(NAMES[0], Model(NAMES[0]))


def gemma():
    return _models.get(NAMES[1]) or _models.setdefault(NAMES[1], Model(NAMES[1]))


def test_layout_and_nnhost(model):
    for rel in ("onnx/model.onnx", "onnx/model_fp32.onnx", "onnx/model_fused.onnx", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "config.json", "generation_config.json", "nnhost.json"):
        assert (model.dir / rel).is_file(), rel
    for graph in ("onnx/model.onnx", "onnx/model_fp32.onnx", "onnx/model_fused.onnx"):
        assert_weights_beside(model.dir / graph)
    assert verify_folder(model.dir) == []
    m = model.meta
    assert m["variants"] == {"int4": "onnx/model.onnx", "fp32": "onnx/model_fp32.onnx",
                             "int4-fused": "onnx/model_fused.onnx"}
    assert m["default_variant"] == "int4"
    for variant, layout in (("int4", "left_padded"), ("int4-fused", "ragged")):
        props = model.int4.sess if variant == "int4" else model.fused.sess
        assert props.get_modelmeta().custom_metadata_map["nnhost.kv_layout"] == layout
    assert m["logits"] == "last" and m["context_length"] == 8192
    cfg = json.loads((model.dir / "config.json").read_text())
    gen = json.loads((model.dir / "generation_config.json").read_text())
    if model.name.startswith("smollm2"):
        assert m["kind"] == "chat" and "base_model" not in m
        assert m["stop_tokens"] == ["<|im_end|>", "<|endoftext|>"] and gen["eos_token_id"] == [2, 0]
        assert cfg["model_type"] == "llama" and (cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]) == (30, 3, 64)
    else:
        assert m["kind"] == "completion" and m["base_model"] is True
        assert m["stop_tokens"] == ["<eos>", "<end_of_turn>"] and gen["eos_token_id"] == [1, 106]
        assert cfg["model_type"] == "gemma3_text" and cfg["sliding_window"] == 512
        assert cfg["layer_types"].count("full_attention") == 3 and cfg["layer_types"][5] == "full_attention"
        assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 1, 256)


def test_tokenizer(model):
    tok = model.tok
    for text in ["Hello world", "  two  spaces\n\nnewlines\tTab 12345 émigré 日本語 🙂", "x<y> & {'a': [1, 2]}"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    c = model.tok_config
    if model.name.startswith("smollm2"):
        assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
        assert c["bos_token"] == "<|im_start|>" and c["eos_token"] == "<|im_end|>" and c["add_bos_token"] is False
        assert tok.encode("<|im_start|>user\nHi<|im_end|>").ids[:1] + tok.encode("<|im_end|>").ids == [1, 2]
        assert tok.encode("Hello world").ids == [19556, 905]
    else:
        assert [tok.token_to_id(t) for t in ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")] == [2, 1, 105, 106]
        assert c["bos_token"] == "<bos>" and c["add_bos_token"] is True
        assert tok.encode("Hello world").ids == [2, 9259, 1902]          # adds <bos> itself (like HF's)
        assert tok.encode("Hello world", add_special_tokens=False).ids == [9259, 1902]
        assert tok.encode("a\n\nb").tokens == ["<bos>", "a", "\n\n", "b"]


def test_chat_templates_render_in_minijinja(model):
    c = model.tok_config
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital of France?"}]
    text = render_chat(c["chat_template"], msgs, c["bos_token"], c["eos_token"])
    if model.name.startswith("smollm2"):
        assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
                        "assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
                        "<|im_start|>assistant\n")
    else:
        assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
                        "<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n")
        assert model.tok.encode(text, add_special_tokens=False).ids[:3] == [2, 105, 2364]


def test_fp32_matches_numpy_reference(model):
    meta, W = load_gguf(model.gguf())
    ids = model.tok.encode("The capital of France is", add_special_tokens=model.name.startswith("gemma")).ids
    want = forward(meta, W, ids)[-1]
    got = model.fp32.run(ids)[0][0]
    diff = float(np.abs(got - want).max()) / float(np.abs(want).max())
    print(f"\n{model.name}: max |ORT fp32 - numpy reference| / max|logit| = {diff:.1e}")
    assert diff <= 1e-3 and got.argmax() == want.argmax()


def test_kv_cache_consistency(model):
    """The last tokens run on a cache of the ones before give the logits of the whole
    prompt: within float rounding for fp32, and for the quantized graph whenever two or
    more tokens run (the host's prefix cache always runs two). A single row may take
    another MatMulNBits kernel (AVX2-only CPUs: 2-3 % of max |logit|; identical on
    AVX-512 VNNI), held to the same bound as the fused graph's cached step."""
    ids = model.tok.encode("The quick brown fox jumps over the lazy dog because it").ids
    n = len(ids)
    for dec, rests in ((model.fp32, (1, 2)), (model.int4, (2, 3))):
        full, _ = dec.run(ids)
        for rest in rests:
            _, past = dec.run(ids[:-rest])
            step, _ = dec.run(ids[-rest:], positions=[list(range(n - rest, n))], past=past)
            diff = float(np.abs(step - full).max()) / float(np.abs(full).max())
            assert diff <= 1e-4, (rest, diff)
    full, _ = model.int4.run(ids)
    _, past = model.int4.run(ids[:-1])
    step, _ = model.int4.run(ids[-1:], positions=[[n - 1]], past=past)
    cosine = float(np.dot(step[0], full[0]) / (np.linalg.norm(step[0]) * np.linalg.norm(full[0])))
    assert cosine >= 0.999 and step.argmax() == full.argmax(), cosine


def test_left_padding_does_not_change_real_tokens(model):
    a = model.tok.encode("The quick brown fox jumps over the lazy dog").ids
    b = model.tok.encode("Hello").ids
    pad = len(a) - len(b)
    batch, past = model.fp32.run([a, [0] * pad + b], mask=[[1] * len(a), [0] * pad + [1] * len(b)])
    for row, ids in ((0, a), (1, b)):
        single = model.fp32.run(ids)[0][0]
        assert np.abs(batch[row] - single).max() <= 1e-4 * np.abs(single).max()


def _teacher_forced(dec, ids):
    out = [dec.run(ids[:1])[0][0]]
    logits, past = dec.run(ids[:1])
    for i in range(1, len(ids)):
        if isinstance(dec, RaggedDecoder):
            logits, past = dec.run(ids[i:i + 1], past=past)
        else:
            logits, past = dec.run(ids[i:i + 1], positions=[[i]], past=past)
        out.append(logits[0])
    return np.array(out)


def test_int4_quality(model):
    ids = model.tok.encode(TEXT).ids
    ref, q = _teacher_forced(model.fp32, ids), _teacher_forced(model.int4, ids)
    lsm = lambda x: x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))  # noqa: E731
    pr, pq = lsm(ref), lsm(q)
    agree = float((q.argmax(-1) == ref.argmax(-1)).mean())
    kl = float((np.exp(pr) * (pr - pq)).sum(-1).mean())
    cos = float(np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(q, ref)]))
    nll = lambda p: float(np.exp(-p[np.arange(len(ids) - 1), ids[1:]].mean()))  # noqa: E731
    print(f"\n{model.name} int4 vs fp32 over {len(ids)} positions: top-1 agreement {agree:.3f}, "
          f"mean KL {kl:.4f}, mean logits cosine {cos:.4f}, perplexity {nll(pr):.2f} -> {nll(pq):.2f}")
    # SmolLM2 (Q4_1 GGUF): the int4 packing is exact, the 8-bit head nearly (0.973, KL 0.006).
    # Gemma (mostly Q5_0/Q6_K/Q8_0): 8-bit weights (0.987, KL 0.002; in int4 it was 0.84, KL 0.12).
    assert agree >= 0.9 and kl <= 0.03 and cos >= 0.99
    # the fused graph (same int4 weights, GroupQueryAttention etc.) is as close to fp32 as the naive one
    f = _teacher_forced(model.fused, ids)
    pf = lsm(f)
    agree_f = float((f.argmax(-1) == ref.argmax(-1)).mean())
    same = float((f.argmax(-1) == q.argmax(-1)).mean())
    kl_f = float((np.exp(pr) * (pr - pf)).sum(-1).mean())
    print(f"{model.name} fused int4 vs fp32: top-1 agreement {agree_f:.3f}, mean KL {kl_f:.4f}, perplexity "
          f"{nll(pf):.2f}; fused vs naive int4 top-1 agreement {same:.3f}")
    # measured: SmolLM2 0.973 (= naive), Gemma 0.987 (= naive); int8 activation noise may move either
    assert agree_f >= agree - 0.08 and kl_f <= 1.5 * kl + 0.01 and same >= 0.9


def near_tie(dec, prompt: list[int], out: list[int], margin: float = 0.1) -> int:
    """The first step of the greedy continuation `out` at which `dec`'s two most likely tokens are
    within `margin` logits (len(out) if none): where a rounding difference may rightly change course."""
    for i in range(len(out)):
        logits = dec.run(prompt + out[:i])[0][0]
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] < margin:
            return i
    return len(out)


def test_fused_greedy_agrees_with_naive_and_passes_generate_checks(model):
    """Greedy continuations of the fused and the naive quantized graphs follow fp32's until fp32 itself
    nearly ties (or for 8 tokens), and the manifest's [[verify.generate]] facts hold for the fused variant."""
    stop = set(model.meta["stop_token_ids"])
    prompt = model.chat_ids("Write a short story about a robot.") if model.name.startswith("smollm2") else \
        model.tok.encode("Once upon a time, in a small village by the sea,").ids
    reference = model.fp32.greedy(prompt, 32, stop)
    tie = near_tie(model.fp32, prompt, reference)
    for name, dec in (("naive", model.int4), ("fused", model.fused)):
        out = dec.greedy(prompt, 32, stop)
        prefix = next((i for i, (a, b) in enumerate(zip(out, reference)) if a != b), min(len(out), len(reference)))
        print(f"\n{model.name}: {name} vs fp32 greedy: identical prefix {prefix} of {len(reference)} "
              f"(fp32's first near-tie at {tie})")
        assert prefix >= min(8, tie), (name, prefix, tie)
    for c in model.manifest.generate_checks:
        ids = model.chat_ids(c.prompt) if c.chat else model.tok.encode(c.prompt).ids
        answer = model.tok.decode(model.fused.greedy(ids, c.max_new_tokens, stop), skip_special_tokens=True)
        assert c.expect in answer, (c.prompt, answer)


def test_smollm2_chat_answers_paris():
    """fp32 answers all three questions with Paris. The quantized graph answers the two
    with a clear margin; "What is the capital of France?" is a near-tie (fp32's top two
    first tokens 0.08 logits apart) that int8 activations decide per CPU: Paris on
    AVX-512 VNNI, a French ramble on AVX2-only machines (docs/PROVIDERS.md)."""
    m = smol()
    stop = set(m.meta["stop_token_ids"])
    questions = ("What is the capital of France?", "Name the capital of France.", "Which city is the capital of France?")
    for dec, must in ((m.fp32, questions), (m.int4, questions[1:])):
        for q in questions:
            answer = m.tok.decode(dec.greedy(m.chat_ids(q), 20, stop), skip_special_tokens=True)
            print(f"\n{q!r} -> {answer!r}")
            assert q not in must or "Paris" in answer, (q, answer)


def test_gemma_base_completes_the_capital_of_france():
    m = gemma()
    ids = m.tok.encode("The capital of France is").ids
    paris = m.tok.encode(" Paris", add_special_tokens=False).ids[0]
    ranks = {}
    for variant, dec in (("fp32", m.fp32), ("int4", m.int4)):
        logits = dec.run(ids)[0][0]
        ranks[variant] = int((logits > logits[paris]).sum()) + 1
    text = m.tok.decode(m.int4.greedy(ids, 24, set(m.meta["stop_token_ids"])), skip_special_tokens=True)
    print(f"\n'The capital of France is': rank of ' Paris' fp32 {ranks['fp32']}, int4 {ranks['int4']}; "
          f"int4 greedy: {text!r}")
    assert ranks["fp32"] <= 3 and ranks["int4"] <= 10   # a base model: greedy continues " the ..."
    assert "France" in text or "city" in text            # stays on topic
    few = m.tok.encode("Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:").ids
    assert m.tok.decode(m.int4.greedy(few, 3, set()), skip_special_tokens=True).strip().startswith("Paris")


def test_decode_speed(model):
    """Greedy decode, int4, 2 threads (sequential), 128 new tokens after a short prompt; printed."""
    if model.name.startswith("smollm2"):
        ids = model.chat_ids("Write a short story about a robot who learns to paint.")
    else:
        ids = model.tok.encode("Once upon a time, in a small village by the sea,").ids
    dec = model.int4
    t0 = time.perf_counter()
    logits, past = dec.run(ids)
    prefill = time.perf_counter() - t0
    total, n = len(ids), 0
    t1 = time.perf_counter()
    for _ in range(128):
        nxt = int(np.argmax(logits[0]))
        logits, past = dec.run([nxt], positions=[[total]], past=past)
        total, n = total + 1, n + 1
    rate = n / (time.perf_counter() - t1)
    print(f"\n{model.name} int4: prefill {len(ids)} tokens {prefill * 1000:.0f} ms, decode {rate:.1f} tok/s (128 tokens)")
    assert rate > 5


def test_second_run_is_cached(model):
    p = subprocess.run([sys.executable, str(MODELS / "prepare.py"), "--only", model.name],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "ok (cached)" in p.stdout
