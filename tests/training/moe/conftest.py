"""Fixtures of the MoE tests: real (term, context) pairs, a counter of expert FFN evaluations."""

from __future__ import annotations

from collections import Counter

import pytest

from training.moe.routing import RoutedMoeBlock


@pytest.fixture
def count_ffn(monkeypatch) -> Counter:
    """Count expert FFN evaluations (expert id -> calls) of every RoutedMoeBlock."""
    calls: Counter = Counter()
    original = RoutedMoeBlock.expert_forward

    def counted(self, e, x):
        calls[e] += 1
        return original(self, e, x)

    monkeypatch.setattr(RoutedMoeBlock, "expert_forward", counted)
    return calls


@pytest.fixture(scope="session")
def pairs_3dex(data_3dex, wordnet_lexicon, tmp_path_factory) -> list[tuple[str, str]]:
    """240 real (term, context) pairs: Urban Dictionary rows (3D-EX) interleaved with WordNet examples."""
    from dataset.preprocess import main as preprocess
    from dataset.records import load_records

    out = tmp_path_factory.mktemp("data")
    assert preprocess(["--input", str(data_3dex / "Urban_test.csv"), "--output-dir", str(out)]) == 0
    urban = load_records(out / "all.jsonl")[::40][:120]
    wordnet = load_records(wordnet_lexicon / "all.jsonl")[::50][:120]
    return [(r.term, r.context) for pair in zip(urban, wordnet, strict=True) for r in pair]
