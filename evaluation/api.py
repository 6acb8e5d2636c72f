"""Python entry points other stages import: `score` (training's validation BLEU, inference's Best-of-N).

    from evaluation.api import score
    score(["a financial institution"], [record], metrics=("bleu", "rouge"), protocol="max")
    -> {"bleu": ..., "rougeL": ..., "n_examples": 1, "n_samples": 1, "n_empty": 0}

Give `predictions[i]` as a string, or as a list of samples for Best-of-N (then the result also has
"oracle": the mean over examples of the best sample's score). References of a record are drawn from
`pool` (default: `references` itself, i.e. the evaluation split) by the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataset.records import Record
from evaluation.metrics import Metric, get_metric, resolve_names
from evaluation.metrics.settings import MetricSettings
from evaluation.protocols import Protocol, get_protocol, reference_lists
from evaluation.scoring import SampleScores, score_samples, summarize


def build_metrics(names: Sequence[str], settings: MetricSettings, protocol: Protocol) -> list[Metric]:
    """Instantiate the named metrics with the settings in force under `protocol`."""
    effective = protocol.settings(settings)
    return [get_metric(n, effective) for n in resolve_names(names)]


def _samples(predictions: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[p] if isinstance(p, str) else list(p) for p in predictions]


def score_records(
    predictions: Sequence[str | Sequence[str]],
    references: Sequence[Record],
    metrics: Sequence[str] = ("bleu", "rouge"),
    protocol: str = "max",
    *,
    pool: Sequence[Record] | None = None,
    settings: MetricSettings | None = None,
    workers: int = 1,
) -> SampleScores:
    """Score every sample of every prediction; see `SampleScores.per_example` for per-example arrays."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference records")
    proto = get_protocol(protocol)
    samples = _samples(predictions)
    if any(not s for s in samples):
        raise ValueError("every prediction needs at least one sample")
    refs = reference_lists(references, references if pool is None else pool, proto)
    built = build_metrics(metrics, settings or MetricSettings(), proto)
    return score_samples(samples, refs, built, proto, workers, [r.term for r in references])


def score(
    predictions: Sequence[str | Sequence[str]],
    references: Sequence[Record],
    metrics: Sequence[str] = ("bleu", "rouge"),
    protocol: str = "max",
    *,
    pool: Sequence[Record] | None = None,
    settings: MetricSettings | None = None,
    workers: int = 1,
) -> dict:
    """Return {metric: score (0-100)} plus n_examples, n_samples, n_empty and, for Best-of-N, "oracle"."""
    result = summarize(
        score_records(predictions, references, metrics, protocol, pool=pool, settings=settings, workers=workers),
        get_protocol(protocol),
    )
    return {**result.pop("scores"), **result}


def best_sample(
    predictions: Sequence[Sequence[str]],
    references: Sequence[Record],
    metric: str = "bleu",
    protocol: str = "max",
    *,
    pool: Sequence[Record] | None = None,
    settings: MetricSettings | None = None,
) -> list[int]:
    """Index of the best-scoring sample of each example (the Best-of-N oracle's choice)."""
    scores = score_records(predictions, references, (metric,), protocol, pool=pool, settings=settings)
    (name,) = scores.per_sample
    values, owner = scores.per_sample[name], scores.example_of
    starts = np.concatenate([[0], np.cumsum(np.bincount(owner))[:-1]])
    return [int(np.argmax(values[s : s + len(p)])) for s, p in zip(starts, predictions)]
