"""Moses sentence BLEU against the real program's output and hand-computed edge cases."""
from __future__ import annotations

import json
import math

import pytest

import sacrebleu

from evaluation.bleu import BleuScorer, moses_max_single_bleu, moses_sentence_bleu


def test_reproduces_moses_on_1000_urban_pairs(data_3dex):
    rows = [json.loads(l) for l in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()]
    assert len(rows) == 1000
    for r in rows:
        assert moses_sentence_bleu(r["hypothesis"], r["references"]) == pytest.approx(r["moses_multi"], abs=2e-6), r
        assert moses_max_single_bleu(r["hypothesis"], r["references"]) == pytest.approx(r["moses_max_single"], abs=2e-6), r


@pytest.mark.parametrize("hyp,refs,expected", [
    ("", ["a fungus"], 0.0),
    ("v w x y z", ["a b c d e"], (1 / 6 * 1 / 5 * 1 / 4 * 1 / 3) ** 0.25),          # 0.2296: BLEU+1 floor
    ("x y z", ["a b c"], (1 / 4 * 1 / 3 * 1 / 2 * 1) ** 0.25),                        # 0.4518
    ("a person", ["a person who is afraid", "a man"], 1.0),                            # closest-length BP
    ("a person", ["a person who is afraid"], math.exp(1 - 5 / 2)),                    # shorter than every ref
    ("the the the", ["the cat"], ((2 / 4) * (1 / 3) * (1 / 2) * 1) ** 0.25),        # clipping, no BP when longer
    ("A Person", ["a person"], (1 / 3 * 1 / 2) ** 0.25),                               # case-sensitive
    ("café noir", ["café noir"], 1.0),                                                 # unicode
])
def test_hand_computed(hyp, refs, expected):
    assert moses_sentence_bleu(hyp, refs) == pytest.approx(expected, rel=1e-9)


def test_rejects_bad_references():
    with pytest.raises(TypeError):
        moses_sentence_bleu("a", "a")
    with pytest.raises(ValueError):
        moses_sentence_bleu("a", [])


@pytest.mark.parametrize("hyp,refs,expected", [
    # references of different lengths: clipping against the max count over references, BP from the closest one
    ("the cat sat", ["the cat", "a cat sat on the mat"], ((4 / 4) * (3 / 3) * (1 / 2) * 1) ** 0.25),
    # repeated n-grams: "a a a a" vs "a a": 2 of 4 unigrams, 1 of 3 bigrams match
    ("a a a a", ["a a"], ((3 / 5) * (2 / 4) * (1 / 3) * (1 / 2)) ** 0.25),
])
def test_hand_computed_multi(hyp, refs, expected):
    assert moses_sentence_bleu(hyp, refs) == pytest.approx(expected, rel=1e-9)


def test_scorer_matches_sacrebleu_where_settings_coincide(data_3dex):
    """13a tokens + exp smoothing + effective order: identical to sacrebleu.sentence_bleu, single and multi-ref."""
    rows = [json.loads(l) for l in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()][:300]
    scorer = BleuScorer(tokenize="13a", smooth="exp")
    for r in rows:
        assert scorer.multi(r["hypothesis"], r["references"]) == sacrebleu.sentence_bleu(
            r["hypothesis"], r["references"]).score
        for ref in r["references"]:
            assert scorer.multi(r["hypothesis"], [ref]) == sacrebleu.sentence_bleu(r["hypothesis"], [ref]).score


def test_scorer_is_moses_in_points(data_3dex):
    rows = [json.loads(l) for l in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()][:300]
    scorer = BleuScorer()
    for r in rows:
        assert scorer.multi(r["hypothesis"], r["references"]) == pytest.approx(100 * r["moses_multi"], abs=2e-4)
        assert scorer.max_single(r["hypothesis"], r["references"]) == pytest.approx(100 * r["moses_max_single"], abs=2e-4)
