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
        assert moses_max_single_bleu(r["hypothesis"], r["references"]) == pytest.approx(
            r["moses_max_single"], abs=2e-6
        ), r


@pytest.mark.parametrize(
    "hyp,refs,expected",
    [
        ("", ["a fungus"], 0.0),
        ("v w x y z", ["a b c d e"], (1 / 6 * 1 / 5 * 1 / 4 * 1 / 3) ** 0.25),  # 0.2296: BLEU+1 floor
        ("x y z", ["a b c"], (1 / 4 * 1 / 3 * 1 / 2 * 1) ** 0.25),  # 0.4518
        ("a person", ["a person who is afraid", "a man"], 1.0),  # closest-length BP
        ("a person", ["a person who is afraid"], math.exp(1 - 5 / 2)),  # shorter than every ref
        ("the the the", ["the cat"], ((2 / 4) * (1 / 3) * (1 / 2) * 1) ** 0.25),  # clipping, no BP when longer
        ("A Person", ["a person"], (1 / 3 * 1 / 2) ** 0.25),  # case-sensitive
        ("café noir", ["café noir"], 1.0),  # unicode
        ("  a   person ", ["a person"], 1.0),  # runs of spaces: no empty token
        # Moses splits on " " only: a no-break space or a tab stays inside the token (one hypothesis token here)
        ("a\u00a0person", ["a person"], (1 / 2) ** 0.25 * math.exp(1 - 2 / 1)),  # 30.93, not 100
        ("a\tperson", ["a person"], (1 / 2) ** 0.25 * math.exp(1 - 2 / 1)),
        ("a\u00a0person", ["a\u00a0person"], 1.0),
    ],
)
def test_hand_computed(hyp, refs, expected):
    assert moses_sentence_bleu(hyp, refs) == pytest.approx(expected, rel=1e-9)


def test_tokens_split_on_spaces_only():
    from evaluation.bleu import moses_tokens

    assert moses_tokens(" a  b\tc\u00a0d ") == ["a", "b\tc\u00a0d"]
    assert moses_tokens("") == [] and moses_tokens("   ") == []


def test_rejects_bad_references():
    with pytest.raises(TypeError):
        moses_sentence_bleu("a", "a")
    with pytest.raises(ValueError):
        moses_sentence_bleu("a", [])
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        BleuScorer().scores(["a", "b"], [["a"]], multi=True)


@pytest.mark.parametrize(
    "hyp,refs,expected",
    [
        # references of different lengths: clipping against the max count over references, BP from the closest one
        ("the cat sat", ["the cat", "a cat sat on the mat"], ((4 / 4) * (3 / 3) * (1 / 2) * 1) ** 0.25),
        # repeated n-grams: "a a a a" vs "a a": 2 of 4 unigrams, 1 of 3 bigrams match
        ("a a a a", ["a a"], ((3 / 5) * (2 / 4) * (1 / 3) * (1 / 2)) ** 0.25),
    ],
)
def test_hand_computed_multi(hyp, refs, expected):
    assert moses_sentence_bleu(hyp, refs) == pytest.approx(expected, rel=1e-9)


def test_scorer_matches_sacrebleu_where_settings_coincide(data_3dex):
    """13a tokens + exp smoothing + effective order: identical to sacrebleu.sentence_bleu, single and multi-ref."""
    rows = [json.loads(l) for l in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()]
    hyps, refs = [r["hypothesis"] for r in rows], [r["references"] for r in rows]
    scorer = BleuScorer(tokenize="13a", smooth="exp")
    assert scorer.scores(hyps, refs, multi=True).tolist() == [
        sacrebleu.sentence_bleu(h, rs).score for h, rs in zip(hyps, refs)
    ]
    assert scorer.scores(hyps, refs, multi=False).tolist() == [
        max(sacrebleu.sentence_bleu(h, [r]).score for r in rs) for h, rs in zip(hyps, refs)
    ]


def test_batch_scorer_is_moses_in_points(data_3dex):
    rows = [json.loads(l) for l in (data_3dex / "moses_sentence_bleu_urban_test.jsonl").open()]
    hyps, refs = [r["hypothesis"] for r in rows], [r["references"] for r in rows]
    scorer = BleuScorer()
    assert scorer.scores(hyps, refs, multi=True) / 100 == pytest.approx([r["moses_multi"] for r in rows], abs=2e-6)
    assert scorer.scores(hyps, refs, multi=False) / 100 == pytest.approx(
        [r["moses_max_single"] for r in rows], abs=2e-6
    )
    one_by_one = [moses_sentence_bleu(h, rs) for h, rs in zip(hyps[:50], refs[:50])]
    assert scorer.scores(hyps[:50], refs[:50], multi=True) / 100 == pytest.approx(one_by_one, rel=1e-12)


def test_batch_edge_cases():
    scorer = BleuScorer()
    assert scorer.scores([], [], multi=True).tolist() == []
    assert scorer.scores(["", "a b"], [["a b"], ["a b"]], multi=False).tolist() == [0.0, 100.0]
    assert scorer.scores(["x"], [["y"]], multi=True)[0] == pytest.approx(100 * (1 / 2) ** 0.25)
