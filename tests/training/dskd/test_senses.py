"""Sense dictionary from SmolLM2-135M over real lexicon records: word grouping, k-means senses, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.records import load_records
from run_config.loader import load_config
from run_config.runtime import read_manifest
from training.dskd.config import DSKDConfig
from training.dskd.senses import (
    CHUNK_DIR,
    SENSES_FILE,
    SenseDictionary,
    build_sense_dictionary,
    cluster_word,
    corpus_texts,
    senses_per_word,
)
from training.dskd.words import TokenTexts, word_spans

N_RECORDS = 12


@pytest.fixture(scope="module")
def teacher(smollm2_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="module")
def corpus(wordnet_lexicon: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
    records = load_records(wordnet_lexicon / "train.jsonl")[:N_RECORDS]
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    return path


def _cfg(corpus: Path, out: Path, **extra) -> DSKDConfig:
    return load_config(
        None,
        DSKDConfig,
        {
            "teacher_model": "smollm2",
            "data_path_train": str(corpus),
            "output_dir": str(out),
            "sense_k": 4,
            "sense_chunk_texts": 8,
            "sense_batch_size": 6,
            "device": "cpu",
            **extra,
        },
    )


def test_word_spans_join_subwords(teacher) -> None:
    _, tok = teacher
    ids = tok(" unkind people, the bank's river-side vermilion", add_special_tokens=False)["input_ids"]
    words = [s.word for s in word_spans(ids, TokenTexts(tok))]
    assert words == ["unkind", "people", "the", "bank", "river", "side", "vermilion"]
    spans = word_spans(ids, TokenTexts(tok))
    assert tok.decode(ids[spans[-1].start : spans[-1].end]) == " vermilion"


def test_rare_words_get_fewer_senses() -> None:
    assert senses_per_word(1, 10, 2) == 1 and senses_per_word(7, 10, 2) == 3 and senses_per_word(500, 10, 2) == 10
    x = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]], dtype=np.float32)
    centroids = cluster_word(x, 2, n_init=2, seed=0)
    assert np.allclose(sorted(centroids[:, 1]), [0.05, 5.05])
    assert cluster_word(np.ones((3, 2), np.float32), 3, 2, 0).shape == (1, 2)  # identical vectors: one sense


def test_build_and_resume(teacher, corpus: Path, tmp_path: Path) -> None:
    model, tok = teacher
    cfg = _cfg(corpus, tmp_path)
    senses = build_sense_dictionary(cfg, model, tok, "smollm2", torch.device("cpu"))
    texts = corpus_texts(cfg.corpus_paths)
    manifest = read_manifest(cfg.senses_path)
    n_chunks = (len(texts) + 7) // 8
    assert manifest["chunks_computed"] == n_chunks >= 3
    assert senses.vectors.shape[1] == model.config.hidden_size and len(senses) > 30
    assert "the" in senses and len(senses.senses("the")) == 4  # frequent word: k senses
    counts = np.diff(senses.offsets.numpy())
    assert counts.min() >= 1 and counts.max() <= 4 and counts.sum() == senses.vectors.shape[0]
    assert torch.isfinite(senses.vectors).all()

    # An up-to-date dictionary is reused as is.
    assert build_sense_dictionary(cfg, model, tok, "smollm2", torch.device("cpu")).words == senses.words

    # Interrupted run: the last chunk and the final files are missing -> only that chunk is recomputed.
    chunks = sorted((cfg.senses_path / CHUNK_DIR).glob("chunk-*.npz"))
    kept = {p: p.stat().st_mtime_ns for p in chunks[:-1]}
    chunks[-1].unlink()
    (cfg.senses_path / SENSES_FILE).unlink()
    (cfg.senses_path / "manifest.json").unlink()
    resumed = build_sense_dictionary(cfg, model, tok, "smollm2", torch.device("cpu"))
    assert read_manifest(cfg.senses_path)["chunks_computed"] == 1
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert resumed.words == senses.words and torch.equal(resumed.offsets, senses.offsets)
    assert torch.allclose(resumed.vectors, senses.vectors, atol=1e-4)
    assert SenseDictionary.load(cfg.senses_path).words == senses.words


def test_changed_corpus_starts_the_chunks_over(teacher, corpus: Path, tmp_path: Path) -> None:
    model, tok = teacher
    build_sense_dictionary(_cfg(corpus, tmp_path, sense_max_texts=8), model, tok, "smollm2", torch.device("cpu"))
    smaller = _cfg(corpus, tmp_path, sense_max_texts=4)
    senses = build_sense_dictionary(smaller, model, tok, "smollm2", torch.device("cpu"))
    assert read_manifest(smaller.senses_path)["texts"] == 4
    assert len(list((smaller.senses_path / CHUNK_DIR).glob("chunk-*.npz"))) == 1
    shutil.rmtree(smaller.senses_path)
    assert len(senses) > 5
