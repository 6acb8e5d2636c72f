"""Fixtures of the metric tests: one offline MiniLM setting for BERTScore, MoverScore and MAUVE."""

from __future__ import annotations

import pytest

from evaluation.metrics.settings import MetricSettings


@pytest.fixture(scope="session")
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
