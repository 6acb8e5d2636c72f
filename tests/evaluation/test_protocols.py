"""Protocols and the Python API on real Urban rows (terms with several definitions)."""

from __future__ import annotations

import pytest

from evaluation import scoring
from evaluation.api import best_sample, score, score_records
from evaluation.bleu import moses_max_single_bleu, moses_sentence_bleu
from evaluation.metrics.settings import MetricSettings
from evaluation.protocols import PROTOCOLS, get_protocol, reference_lists


def test_term_references_keep_every_definition(by_term, urban):
    smock = by_term["smock"]
    assert len(smock) == 3
    refs = reference_lists(smock, urban, PROTOCOLS["max"])
    for record, rs in zip(smock, refs):
        assert rs[0] == record.definition
        assert sorted(rs) == sorted(r.definition for r in smock)
    kpcofgs = by_term["k-p-c-o-f-g-s"]  # two identical definitions: never deduplicated
    (rs, *_) = reference_lists(kpcofgs, urban, PROTOCOLS["max"])
    assert len(rs) == 3 and len(set(rs)) == 2


def test_per_context_uses_only_the_same_context(by_term, urban):
    rawffles = by_term["rawffles"]
    (rs, *_) = reference_lists(rawffles, urban, PROTOCOLS["per-context"])
    assert sorted(rs) == sorted(r.definition for r in rawffles if r.context == rawffles[0].context)
    smock = by_term["smock"]
    assert reference_lists(smock[:1], urban, PROTOCOLS["per-context"]) == [[smock[0].definition]]


def test_protocols_score_a_term_with_several_definitions(by_term, urban):
    """Another sense's definition as the prediction: max/multi-ref credit it, per-context does not."""
    smock = by_term["smock"]
    target, other = smock[0], smock[1]
    refs = [r.definition for r in smock]
    got = {p: score([other.definition], [target], ("bleu", "rouge"), p, pool=urban) for p in PROTOCOLS}
    assert got["max"]["bleu"] == pytest.approx(100.0)
    assert got["max"]["rougeL"] == pytest.approx(100.0)
    assert got["max"]["bleu"] == pytest.approx(100 * moses_max_single_bleu(other.definition, refs))
    assert got["multi-ref"]["bleu"] == pytest.approx(100 * moses_sentence_bleu(other.definition, refs))
    assert got["per-context"]["bleu"] == pytest.approx(100 * moses_sentence_bleu(other.definition, [target.definition]))
    assert got["per-context"]["bleu"] < got["max"]["bleu"]


def test_orig_compat_strips_periods_and_rounds_up(by_term, urban):
    target = by_term["smock"][1]  # "a excessively large shirt"
    pred = "an excessively large shirt."
    strict = score([pred], [target], ("bleu",), "max", pool=urban)["bleu"]
    compat = score([pred], [target], ("bleu",), "orig-compat", pool=urban)["bleu"]
    assert compat > strict
    assert compat * 100 == int(compat * 100)  # two decimals, rounded up
    finish = get_protocol("orig-compat").finish
    assert finish(12.3401) == 12.35 and finish(10.84) == 10.84 and finish(finish(0.29)) == 0.29


def test_orig_compat_scores_short_hypotheses_zero_in_nist(by_term, urban):
    target = by_term["smock"][1]  # "a excessively large shirt": 4 tokens, fewer than NIST's order 5
    strict = score([target.definition], [target], ("nist",), "max", pool=urban)["nist"]
    compat = score([target.definition], [target], ("nist",), "orig-compat", pool=urban)["nist"]
    assert strict > 0 and compat == 0.0
    assert get_protocol("orig-compat").settings(MetricSettings()).nist_short == "zero"


def test_best_of_n_mean_and_oracle(by_term, urban):
    smock = by_term["smock"]
    preds = [["completely unrelated words here", r.definition] for r in smock]
    out = score(preds, smock, ("bleu", "rouge"), "per-context", pool=urban)
    assert out["n_examples"] == 3 and out["n_samples"] == 6
    assert out["oracle"] == {"bleu": pytest.approx(100.0), "rougeL": pytest.approx(100.0)}
    assert out["bleu"] < out["oracle"]["bleu"]
    assert best_sample(preds, smock, protocol="per-context", pool=urban) == [1, 1, 1]


def test_empty_prediction_scores_zero_and_is_counted(by_term, urban):
    smock = by_term["smock"]
    out = score(["", "  ", smock[2].definition], smock, ("bleu", "rouge"), "max", pool=urban)
    assert out["n_empty"] == 2
    assert out["bleu"] == pytest.approx(100.0 / 3)
    scores = score_records(["", "x", "y"], smock, ("rouge",), pool=urban)
    assert scores.per_sample["rougeL"][0] == 0.0 and scores.empty.tolist() == [True, False, False]


def test_parallel_workers_give_identical_scores(urban, monkeypatch):
    """Serial first (WordNet's files open in the parent), then forked workers: same scores."""
    monkeypatch.setattr(scoring, "MIN_PARALLEL", 100)
    records = urban[:300]
    preds = [r.definition for r in reversed(records)]
    one = score_records(preds, records, ("nist", "meteor", "bleu"), "max", pool=urban, workers=1).per_sample
    two = score_records(preds, records, ("nist", "meteor", "bleu"), "max", pool=urban, workers=2).per_sample
    assert all((one[k] == two[k]).all() for k in one) and one["nist"].std() > 0 and one["meteor"].std() > 0


def test_api_rejects_misaligned_inputs(urban):
    with pytest.raises(ValueError, match="2 predictions for 1"):
        score(["a", "b"], urban[:1])
    with pytest.raises(ValueError, match="unknown protocol"):
        score(["a"], urban[:1], protocol="mean")
