"""BERTScore, MoverScore and MAUVE offline on all-MiniLM-L6-v2: sane orderings on real Urban definitions."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.config import MetricSettings
from evaluation.metrics import get_metric
from evaluation.metrics.moverscore import mover_distance
from run_config.errors import ConfigError


@pytest.fixture(scope="module")
def settings(minilm_dir) -> MetricSettings:
    m = str(minilm_dir)
    return MetricSettings(bertscore_model=m, bertscore_num_layers=6, moverscore_model=m, mauve_model=m,
                          mauve_pooling="mean", mauve_num_buckets=5, batch_size=32)


@pytest.mark.parametrize("name", ["bertscore", "moverscore"])
def test_identical_strings_score_highest(name, settings, by_term):
    smock = [r.definition for r in by_term["smock"]]
    unit = get_metric(name, settings)
    same, para, other = unit.sentence_scores(
        [smock[1], "an excessively big shirt", "a penis that is long and skinny"], [[smock[1]]] * 3)
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
