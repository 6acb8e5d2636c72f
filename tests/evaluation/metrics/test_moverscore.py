"""MoverScore offline on all-MiniLM-L6-v2 and a GPT-2-style tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import get_metric
from evaluation.metrics.moverscore import mover_distance
from evaluation.metrics.settings import MetricSettings


def test_mover_distance_is_zero_for_identical_clouds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert mover_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert mover_distance(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-9)
    assert mover_distance(x, -x) > 1.0


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
