"""BERTScore offline on all-MiniLM-L6-v2 (the first two tests cover MoverScore too: same encoder path)."""

from __future__ import annotations

import pytest

from evaluation.metrics import get_metric
from evaluation.metrics.settings import MetricSettings
from run_config.errors import ConfigError


@pytest.mark.parametrize("name", ["bertscore", "moverscore"])
def test_identical_strings_score_highest(name, settings, by_term):
    smock = [r.definition for r in by_term["smock"]]
    unit = get_metric(name, settings)
    same, para, other = unit.sentence_scores(
        [smock[1], "an excessively big shirt", "a penis that is long and skinny"], [[smock[1]]] * 3
    )
    assert same == pytest.approx(100.0, abs=1e-3)
    assert same > para > other > 0
    # several references: the best one counts
    (best,) = unit.sentence_scores([smock[1]], [smock])
    assert best == pytest.approx(same, abs=1e-3)


def test_bertscore_local_model_needs_num_layers(minilm_dir):
    with pytest.raises(ConfigError, match="bertscore_num_layers"):
        get_metric("bertscore", MetricSettings(bertscore_model=str(minilm_dir)))


def test_bertscore_idf_keeps_identical_strings_on_top(settings, by_term):
    smock = [r.definition for r in by_term["smock"]]
    unit = get_metric("bertscore", settings.model_copy(update={"bertscore_idf": True}))
    refs = [[smock[1]], [smock[1]], [smock[0]]]  # idf weights come from the references of the call
    same, other, same0 = unit.sentence_scores([smock[1], smock[2], smock[0]], refs)
    assert same == pytest.approx(100.0, abs=1e-3) and same0 == pytest.approx(100.0, abs=1e-3) and other < same
    again = unit.sentence_scores([smock[1], smock[2], smock[0]], refs)  # model reused, same weights
    assert again.tolist() == pytest.approx([same, other, same0], abs=1e-4)


@pytest.mark.parametrize("name", ["bertscore", "moverscore"])
def test_empty_strings_on_either_side_score_zero(name, settings, by_term):
    smock = [r.definition for r in by_term["smock"]]
    unit = get_metric(name, settings)
    empty_hyp, empty_ref, both, blank, mixed = unit.sentence_scores(
        ["", smock[1], "", "  ", smock[1]], [[smock[1]], [""], [""], [smock[1]], ["", smock[1]]]
    )
    assert empty_hyp == empty_ref == both == blank == 0.0
    assert mixed == pytest.approx(100.0, abs=1e-3)  # an empty reference beside a real one: the real one counts


def test_bertscore_idf_counts_documents_as_bert_score(settings, by_term, minilm_dir):
    """Each reference counted once per prediction scored against it: the same F1 as bert_score.score."""
    from bert_score import score as bert_score

    smock = [r.definition for r in by_term["smock"]]
    hyps = [smock[1], smock[2], "an excessively big shirt"]
    refs = [smock, [smock[0]], smock[:2]]
    unit = get_metric("bertscore", settings.model_copy(update={"bertscore_idf": True}))
    ours = unit.sentence_scores(hyps, refs)
    _, _, f1 = bert_score(hyps, refs, model_type=str(minilm_dir), num_layers=6, idf=True, batch_size=8)
    assert ours.tolist() == pytest.approx((f1.numpy() * 100).tolist(), abs=1e-4)
    assert "bertscore_idf_documents" in unit.signature()


def test_bertscore_rescaling_with_a_baseline_file(settings, by_term, tmp_path):
    smock = [r.definition for r in by_term["smock"]]
    baseline = tmp_path / "minilm.tsv"
    baseline.write_text("LAYER,P,R,F\n" + "".join(f"{k},0.5,0.5,{0.2 + k / 100}\n" for k in range(7)))
    raw = get_metric("bertscore", settings).sentence_scores(smock[1:], [[smock[0]]] * 2)
    rescaled = get_metric(
        "bertscore", settings.model_copy(update={"bertscore_rescale": True, "bertscore_baseline_file": str(baseline)})
    ).sentence_scores(smock[1:], [[smock[0]]] * 2)
    b = 0.26  # layer 6's F
    assert rescaled.tolist() == pytest.approx(((raw / 100 - b) / (1 - b) * 100).tolist(), abs=1e-4)


def test_bertscore_rescaling_needs_a_baseline(minilm_dir, tmp_path):
    from pydantic import ValidationError

    local = {"bertscore_model": str(minilm_dir), "bertscore_num_layers": 6}
    with pytest.raises(ValidationError, match="ships no baseline"):
        MetricSettings(bertscore_rescale=True, **local)
    MetricSettings(bertscore_rescale=True)  # roberta-large: bert-score ships its table
    bad = tmp_path / "b.tsv"
    bad.write_text("LAYER,P,R,F\n0,0.1,0.1,0.1\n")
    with pytest.raises(ValidationError, match="no row for layer 6"):
        MetricSettings(bertscore_rescale=True, bertscore_baseline_file=str(bad), **local)
    with pytest.raises(ValidationError, match="no such file"):
        MetricSettings(bertscore_rescale=True, bertscore_baseline_file=str(tmp_path / "none.tsv"), **local)
    with pytest.raises(ValidationError, match="bertscore_rescale is off"):
        MetricSettings(bertscore_baseline_file=str(bad), **local)
