"""BERTScore, MoverScore and MAUVE offline on all-MiniLM-L6-v2: sane orderings on real Urban definitions."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import get_metric
from evaluation.metrics.moverscore import mover_distance
from evaluation.metrics.settings import MetricSettings
from run_config.errors import ConfigError


@pytest.fixture(scope="module")
def settings(minilm_dir) -> MetricSettings:
    m = str(minilm_dir)
    return MetricSettings(
        bertscore_model=m,
        bertscore_num_layers=6,
        moverscore_model=m,
        mauve_model=m,
        mauve_pooling="mean",
        mauve_num_buckets=5,
        batch_size=32,
    )


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


def test_mover_distance_is_zero_for_identical_clouds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert mover_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert mover_distance(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-9)
    assert mover_distance(x, -x) > 1.0


def test_mauve_of_a_set_with_itself_is_one(settings, urban, caplog):
    defs = [r.definition for r in urban[:120]]
    unit = get_metric("mauve", settings)
    with caplog.at_level("WARNING"):
        same = unit.compute(defs, [[d] for d in defs])["mauve"]
    assert "noisy" in caplog.text  # fewer than 1,000 samples
    assert same == pytest.approx(100.0, abs=1e-6)
    junk = unit.compute([f"the the the {i}" for i in range(120)], [[d] for d in defs])["mauve"]
    assert junk < 50.0 < same


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


def test_moverscore_with_a_tokenizer_without_special_tokens(smollm2_dir, by_term):
    """GPT-2-style tokens: "" has no token and "." none once punctuation is removed; both score 0."""
    smock = [r.definition for r in by_term["smock"]]
    unit = get_metric("moverscore", MetricSettings(moverscore_model=str(smollm2_dir), batch_size=4))
    same, punct, empty_ref, other = unit.sentence_scores(
        [smock[1], ".", smock[1], "a penis that is long"], [[smock[1]], [smock[1]], ["."], [smock[1]]]
    )
    assert same == pytest.approx(100.0, abs=1e-3) and punct == 0.0 and empty_ref == 0.0 and 0 < other < same


def test_moverscore_truncates_at_its_own_length(settings):
    long = " ".join(["word"] * 600)
    emb = get_metric("moverscore", settings).embed([long])[long]
    assert len(emb) == 510 + 2  # 510 subwords (the original's cut) plus [CLS] and [SEP]; MAUVE's max_length is 256
    short = get_metric("moverscore", settings.model_copy(update={"moverscore_max_length": 3}))
    (score,) = short.sentence_scores(["one two three four"], [["one two three five six"]])
    assert score == pytest.approx(100.0, abs=1e-3)  # both cut to "one two three"


@pytest.mark.parametrize("pooling,model", [("last", "smollm2_dir"), ("mean", "minilm_dir")])
def test_mauve_leaves_empty_predictions_out_and_counts_them(pooling, model, request, urban):
    """As mauve-text drops empty strings from p: the same MAUVE as mauve-text on the non-empty ones, counted."""
    import mauve

    from evaluation.encoders import load_encoder

    s = MetricSettings(
        mauve_model=str(request.getfixturevalue(model)), mauve_pooling=pooling, mauve_num_buckets=4, batch_size=16
    )
    unit = get_metric("mauve", s)
    defs = [r.definition for r in urban[:40]]
    hyps = [d if i % 10 else ("" if i % 20 else " ") for i, d in enumerate(reversed(defs))]
    values, counts = unit.corpus_scores(hyps, [[d] for d in defs])
    assert counts == {"mauve_excluded_predictions": 4, "mauve_excluded_references": 0}
    enc = load_encoder(s.mauve_model)
    p, _ = enc.features([h for h in hyps if h.strip()], pooling)
    q, _ = enc.features(defs, pooling)
    expected = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=4, device_id=-1, seed=s.seed).mauve
    assert values["mauve"] == pytest.approx(expected * 100, abs=1e-6) and 0 < values["mauve"] <= 100
    assert unit.corpus_scores(["", " "], [[d] for d in defs[:2]]) == (
        {"mauve": 0.0},
        {"mauve_excluded_predictions": 2, "mauve_excluded_references": 0},
    )


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
