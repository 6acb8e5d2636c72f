"""Metric units: registry, known scores (hand-computed, empty, unicode, multi-reference), rouge_score agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer

from evaluation.metrics import METRICS, get_metric, resolve_names
from evaluation.metrics.rouge import lcs_length, token_masks
from evaluation.metrics.settings import MetricSettings

S = MetricSettings()


def test_registry_names_and_aliases():
    assert resolve_names(["bleu", "rouge", "ROUGE-L", "bert-score"]) == ["bleu", "rougeL", "bertscore"]
    with pytest.raises(ValueError, match="did you mean meteor"):
        resolve_names(["meteorr"])
    for name in ("bleu", "rougeL", "meteor", "nist", "sacrebleu"):
        metric = get_metric(name, S)
        assert metric.name == name and metric.higher_is_better


@pytest.mark.parametrize(
    "metric,hyp,refs,reduce,expected",
    [
        ("bleu", "x y z", ["a b c"], "max", 100 * (1 / 4 * 1 / 3 * 1 / 2) ** 0.25),  # Moses BLEU+1 floor
        (
            "bleu",
            "a person",
            ["a person who is afraid", "a man"],
            "max",  # best single reference
            100 * max(math.exp(1 - 5 / 2), (2 / 3 * 1 / 2) ** 0.25),
        ),
        ("bleu", "a person", ["a person who is afraid", "a man"], "multi", 100.0),  # closest-length BP, multi-ref
        ("bleu", "a person", ["a person who is afraid", "a man"], "best", 100.0),
        ("bleu", "café noir", ["café noir"], "max", 100.0),  # unicode
        ("rougeL", "the cat sat on the mat", ["the cat on the mat"], "max", 100 * 2 * 1 * (5 / 6) / (1 + 5 / 6)),
        ("rougeL", "The Cat!", ["the cat"], "max", 100.0),  # lowercased, punctuation dropped
        ("rougeL", "a b", ["c d", "a x b"], "max", 100 * 2 * 1 * (2 / 3) / (1 + 2 / 3)),  # best reference
        ("rougeL", "café", ["cafe"], "max", 0.0),  # rouge_score: café -> caf
        ("nist", "a b c d e f", ["a b c d e f"], "max", None),
        ("meteor", "a dog runs", ["a dog runs"], "max", None),
    ],
)
def test_known_scores(metric, hyp, refs, reduce, expected):
    unit = get_metric(metric, S)
    (value,) = unit.sentence_scores([hyp], [refs], reduce)
    if expected is None:  # identical strings: the metric's maximum for this length
        assert value == max(unit.sentence_scores([hyp], [[r]], reduce)[0] for r in refs)
        assert value > unit.sentence_scores(["zzz"], [refs], reduce)[0]
    else:
        assert value == pytest.approx(expected, rel=1e-9)


def test_nist_short_hypothesis_scores_instead_of_dividing_by_zero():
    from nltk.translate.nist_score import sentence_nist

    unit = get_metric("nist", S)
    short, none = unit.sentence_scores(["a b", "x"], [["a b c d e f"], ["a b"]])
    assert short > 0 and none == 0
    assert short == pytest.approx(sentence_nist([["a", "b", "c", "d", "e", "f"]], ["a", "b"], n=2))
    with pytest.raises(ZeroDivisionError):  # what NLTK does with n=5, which the original caught as 0
        sentence_nist([["a", "b", "c", "d", "e", "f"]], ["a", "b"], n=5)
    original = get_metric("nist", MetricSettings(nist_short="zero"))
    short0, long0 = original.sentence_scores(["a b", "a b c d e"], [["a b c d e f"]] * 2)
    assert short0 == 0.0 and long0 == pytest.approx(unit.sentence_scores(["a b c d e"], [["a b c d e f"]])[0])


def test_compute_mean_and_input_checks():
    unit = get_metric("rougeL", S)
    assert unit.compute(["a b", "c"], [["a b"], ["d"]]) == {"rougeL": 50.0}
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        unit.compute(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        unit.compute(["a"], ["a"])


def test_sacrebleu_corpus_with_variable_reference_counts():
    import sacrebleu

    unit = get_metric("sacrebleu", S)
    hyps, refs = ["the cat sat on the mat", "a dog"], [["the cat sat on a mat", "a cat on the mat"], ["a dog barks"]]
    expected = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs], [refs[0][1], None]]).score
    assert unit.compute(hyps, refs) == {"sacrebleu": expected}


def test_rouge_l_identical_to_rouge_score_on_urban_pairs(urban):
    """The bit-parallel LCS gives rouge_score's ROUGE-L F1 exactly (also with stemming / word tokens)."""
    rng = np.random.default_rng(0)
    defs = [r.definition for r in urban]
    pairs = [(defs[i], defs[j]) for i, j in rng.integers(0, len(defs), size=(400, 2))] + [(d, d) for d in defs[:20]]
    for stem in (False, True):
        ours = get_metric("rougeL", MetricSettings(rouge_stemmer=stem))
        ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
        for hyp, target in pairs:
            assert ours.pair_score(hyp, target) == ref.score(target, hyp)["rougeL"].fmeasure


def test_lcs_length_matches_dynamic_programming():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = list(rng.integers(0, 4, size=rng.integers(1, 70)).astype(str))
        b = list(rng.integers(0, 4, size=rng.integers(1, 70)).astype(str))
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
        assert lcs_length(token_masks(a), len(a), b) == table[-1][-1]


def test_every_metric_is_registered_with_a_declared_interface():
    for name in METRICS:
        module, cls = METRICS[name].split(":")
        unit = getattr(__import__(module, fromlist=[cls]), cls)
        assert unit.name == name and isinstance(unit.higher_is_better, bool) and callable(unit.compute)
