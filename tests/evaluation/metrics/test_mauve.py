"""MAUVE offline on all-MiniLM-L6-v2 and SmolLM2: real Urban definitions, empty predictions counted."""

from __future__ import annotations

import pytest

from evaluation.metrics import get_metric
from evaluation.metrics.settings import MetricSettings


def test_mauve_of_a_set_with_itself_is_one(settings, urban, caplog):
    defs = [r.definition for r in urban[:120]]
    unit = get_metric("mauve", settings)
    with caplog.at_level("WARNING"):
        same = unit.compute(defs, [[d] for d in defs])["mauve"]
    assert "noisy" in caplog.text  # fewer than 1,000 samples
    assert same == pytest.approx(100.0, abs=1e-6)
    junk = unit.compute([f"the the the {i}" for i in range(120)], [[d] for d in defs])["mauve"]
    assert junk < 50.0 < same


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
