"""Atomic writes and seeding."""
from __future__ import annotations

import random

import numpy as np
import pytest

from run_config.runtime import AtomicFileSet, atomic_open, read_manifest, set_seed, write_manifest


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_replaces(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_file_set_all_or_nothing(tmp_path):
    with pytest.raises(ValueError):
        with AtomicFileSet() as files:
            files.get(tmp_path / "a.jsonl").write("x\n")
            files.get(tmp_path / "sub" / "b.jsonl").write("y\n")
            raise ValueError
    assert not (tmp_path / "a.jsonl").exists() and not list((tmp_path / "sub").iterdir())
    with AtomicFileSet() as files:
        files.get(tmp_path / "a.jsonl").write("x\n")
    assert (tmp_path / "a.jsonl").read_text() == "x\n"


def test_set_seed_is_deterministic():
    set_seed(21)
    a = (random.random(), np.random.rand())
    set_seed(21)
    assert a == (random.random(), np.random.rand())
    with pytest.raises(ValueError):
        set_seed(-1)


def test_manifest_roundtrip(tmp_path):
    write_manifest(tmp_path, "demo", {"k": 1}, extra="x")
    m = read_manifest(tmp_path)
    assert m["stage"] == "demo" and m["config"] == {"k": 1} and m["extra"] == "x" and "python" in m["versions"]


def test_fingerprint_follows_model_folders_and_names(tmp_path):
    from run_config.runtime import fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    first = fingerprint([model, "meta-llama/Meta-Llama-3-8B", None])
    assert first[1] == ["meta-llama/Meta-Llama-3-8B", None, None] and len(first) == 2
    write_manifest(model, "train", {"a": 1})  # a finished (re)training writes its manifest last
    assert fingerprint([model])[0][1] == (model / "manifest.json").stat().st_size
    assert fingerprint([model]) != first[:1]
