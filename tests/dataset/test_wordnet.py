"""The embedded default lexicon (WordNet 3.0 glosses and usage examples)."""

from __future__ import annotations

from dataset.records import load_records
from dataset.wordnet import word_level_split


def test_embedded_lexicon_is_real_and_split_by_word(wordnet_lexicon):
    splits = {s: load_records(wordnet_lexicon / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert len(splits["train"]) > 30000 and len(splits["test"]) > 3000
    terms = {s: {r.term for r in recs} for s, recs in splits.items()}
    assert not terms["train"] & terms["test"] and not terms["train"] & terms["valid"]
    bank = [r for r in splits["train"] + splits["valid"] + splits["test"] if r.id.startswith("wordnet:bank.n.")]
    assert bank and all(r.source == "WordNet" and r.term in r.context.lower() for r in bank)


def test_word_level_split_deterministic():
    terms = {f"w{i}" for i in range(1000)}
    a, b = word_level_split(terms, 42), word_level_split(terms, 42)
    assert a == b and sum(v == "train" for v in a.values()) == 800
    assert word_level_split(terms, 21) != a
