"""Score predictions (one or several samples per example) with the chosen metrics and protocol.

Per-example metrics run on non-empty predictions only (an empty prediction scores 0 and is counted).
Metrics that are slow per example in pure Python (METEOR, NIST) are spread over worker processes in
contiguous chunks of examples; BLEU (vectorised) and ROUGE-L (bit-parallel LCS) run in-process.
Several samples per example (Best-of-N) give both the mean over samples and the oracle max.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evaluation.metrics import Metric, Reduce
from evaluation.protocols import Protocol

MIN_PARALLEL = 2000  # below this many items, worker start-up costs more than it saves
_JOB: tuple | None = None  # (metric, hyps, refs, reduce), inherited by forked workers


def _init_worker() -> None:
    _JOB[0].after_fork()


def _score_chunk(bounds: tuple[int, int]) -> np.ndarray:
    metric, hyps, refs, reduce = _JOB
    start, end = bounds
    return metric.sentence_scores(hyps[start:end], refs[start:end], reduce)


def resolve_workers(workers: int) -> int:
    """0 means one worker per available CPU core."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sentence_scores(metric: Metric, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce,
                    workers: int = 1) -> np.ndarray:
    """`metric.sentence_scores`, over worker processes (fork) when the metric is CPU-bound and the input large."""
    global _JOB
    n = len(hyps)
    workers = resolve_workers(workers)
    if not (metric.parallel and workers > 1 and n >= MIN_PARALLEL
            and "fork" in multiprocessing.get_all_start_methods()):
        return metric.sentence_scores(hyps, refs, reduce)
    size = max(1, -(-n // (workers * 8)))
    chunks = [(s, min(s + size, n)) for s in range(0, n, size)]
    _JOB = (metric, hyps, refs, reduce)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            parts = list(tqdm(pool.imap(_score_chunk, chunks), desc=metric.name, total=len(chunks),
                              unit=" chunks", disable=None, mininterval=1.0))
    finally:
        _JOB = None
    return np.concatenate(parts)


@dataclass
class SampleScores:
    """Scores of every sample: per-example metrics per sample, corpus metrics once."""

    example_of: np.ndarray  # sample -> example index
    empty: np.ndarray  # sample -> prediction was empty
    per_sample: dict[str, np.ndarray]
    corpus: dict[str, float]

    def per_example(self, how: str = "mean") -> dict[str, np.ndarray]:
        """Per-example scores: mean over the example's samples, or their max (the oracle)."""
        n = int(self.example_of.max()) + 1 if len(self.example_of) else 0
        out = {}
        for name, values in self.per_sample.items():
            if how == "mean":
                total = np.bincount(self.example_of, weights=values, minlength=n)
                out[name] = total / np.bincount(self.example_of, minlength=n)
            else:
                best = np.full(n, -np.inf)
                np.maximum.at(best, self.example_of, values)
                out[name] = best
        return out


def score_samples(samples: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], metrics: Sequence[Metric],
                  protocol: Protocol, workers: int = 1) -> SampleScores:
    """Score each example's samples against its references (already chosen by the protocol)."""
    if len(samples) != len(refs):
        raise ValueError(f"{len(samples)} examples of predictions but {len(refs)} reference lists")
    example_of = np.asarray([i for i, ss in enumerate(samples) for _ in ss], dtype=np.int64)
    flat = [protocol.text(s) for ss in samples for s in ss]
    empty = np.asarray([not s.strip() for s in flat], dtype=bool)
    keep = np.flatnonzero(~empty)
    per_sample: dict[str, np.ndarray] = {}
    corpus: dict[str, float] = {}
    for metric in metrics:
        if metric.per_example:
            values = np.zeros(len(flat))
            if len(keep):
                owners = example_of[keep].tolist()
                values[keep] = sentence_scores(metric, [flat[i] for i in keep.tolist()], [refs[e] for e in owners],
                                               protocol.reduce, workers)
            per_sample[metric.name] = values
        else:
            first = [flat[i] for i in np.unique(example_of, return_index=True)[1]]
            corpus.update(metric.compute(first, list(refs), protocol.reduce))
    return SampleScores(example_of, empty, per_sample, corpus)


def summarize(scores: SampleScores, protocol: Protocol) -> dict:
    """Scores of a run: mean over examples (each the mean of its samples) and, for Best-of-N, the oracle."""
    mean = {k: protocol.finish(float(v.mean())) if len(v) else 0.0 for k, v in scores.per_example("mean").items()}
    out = {"scores": {**mean, **{k: protocol.finish(v) for k, v in scores.corpus.items()}},
           "n_examples": int(len(np.unique(scores.example_of))), "n_samples": int(len(scores.example_of)),
           "n_empty": int(scores.empty.sum())}
    if out["n_samples"] > out["n_examples"]:
        out["oracle"] = {k: protocol.finish(float(v.mean())) for k, v in scores.per_example("max").items()}
    return out
