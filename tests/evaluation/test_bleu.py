"""Moses sentence BLEU against the real program's output and hand-computed edge cases."""
from __future__ import annotations

import json
import math

import pytest

from evaluation.bleu import moses_max_single_bleu, moses_sentence_bleu


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
