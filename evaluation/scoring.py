"""Score predictions (one or several samples per example) with the chosen metrics and protocol.

Per-example metrics run on non-empty predictions only (an empty or failed prediction scores 0 and is
counted). Corpus metrics see every example's first sample; what one leaves out (MAUVE: empty texts)
it counts in `excluded`.
The CPU metrics run side by side in forked worker processes (BLEU and ROUGE-L one task each; METEOR
and NIST, slow per example in pure Python, in contiguous chunks of examples); neural ones in-process.
Several samples per example (Best-of-N) give both the mean over samples and the oracle max.
A protocol that combines references by their mean (`reduce="mean"`) is scored here: every metric scores each
(sample, single reference) pair and the pair scores are averaged per sample. One that averages by term
(`average="term"`) averages each term's examples first, then the terms (`units`: each example's term).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from evaluation.metrics import Metric, Reduce
from evaluation.protocols import Protocol

MIN_PARALLEL = 2000  # below this many items, worker start-up costs more than it saves
_JOB: tuple | None = None  # (metrics, hyps, refs, reduce), inherited by forked workers


def _init_worker() -> None:
    for metric in _JOB[0]:
        metric.after_fork()


def _score_task(task: tuple[int, int, int]) -> np.ndarray:
    metrics, hyps, refs, reduce = _JOB
    which, start, end = task
    return metrics[which].sentence_scores(hyps[start:end], refs[start:end], reduce)


def resolve_workers(workers: int) -> int:
    """0 means one worker per available CPU core."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sentence_scores(
    metrics: Sequence[Metric], hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce, workers: int = 1
) -> dict[str, np.ndarray]:
    """Per-example scores of each metric; CPU metrics run side by side in forked worker processes.

    Every CPU-bound metric is one task (slow pure-Python ones, `chunked`, are split into contiguous
    chunks of examples); neural metrics run in this process, where their model lives.
    """
    global _JOB
    n = len(hyps)
    workers = resolve_workers(workers)
    forked = [i for i, m in enumerate(metrics) if m.cpu_bound]
    size = max(1, -(-n // (workers * 8)))
    tasks = [
        (i, s, min(s + size, n)) if metrics[i].chunked else (i, 0, n)
        for i in forked
        for s in (range(0, n, size) if metrics[i].chunked else [0])
    ]
    out: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    if workers > 1 and n >= MIN_PARALLEL and len(tasks) > 1 and "fork" in multiprocessing.get_all_start_methods():
        _JOB = (metrics, hyps, refs, reduce)
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
                for (i, _, _), part in zip(
                    tasks,
                    tqdm(
                        pool.imap(_score_task, tasks),
                        desc="metrics",
                        total=len(tasks),
                        unit=" tasks",
                        disable=None,
                        mininterval=1.0,
                    ),
                ):
                    out[metrics[i].name].append(part)
        finally:
            _JOB = None
        rest = [m for m in metrics if not m.cpu_bound]
    else:
        rest = list(metrics)
    for metric in rest:
        out[metric.name].append(metric.sentence_scores(hyps, refs, reduce))
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}


@dataclass
class SampleScores:
    """Scores of every sample: per-example metrics per sample, corpus metrics once."""

    example_of: np.ndarray  # sample -> example index
    empty: np.ndarray  # sample -> prediction was empty
    per_sample: dict[str, np.ndarray]
    corpus: dict[str, float]
    excluded: dict[str, int] = field(default_factory=dict)  # items a corpus metric left out, by count name
    units: list[str] | None = None  # example -> its term, for protocols that average by term
    corpus_stats: dict[str, np.ndarray] = field(default_factory=dict)  # corpus metric -> per-example statistics

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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic GC: scoring allocates millions of short-lived, acyclic token objects and
    full collections would re-scan every object the caller holds (measured: ~40 % of the wall time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def score_samples(
    samples: Sequence[Sequence[str]],
    refs: Sequence[Sequence[str]],
    metrics: Sequence[Metric],
    protocol: Protocol,
    workers: int = 1,
    units: Sequence[str] | None = None,
) -> SampleScores:
    """Score each example's samples against its references (already chosen by the protocol); `units` (each
    example's term) is needed by a protocol that averages by term."""
    if protocol.average == "term" and units is None:
        raise ValueError(f"protocol {protocol.name} averages by term: give each example's term (units)")
    with gc_paused():
        scores = _score_samples(samples, refs, metrics, protocol, workers)
    scores.units = None if units is None else list(units)
    return scores


def _score_samples(
    samples: Sequence[Sequence[str]],
    refs: Sequence[Sequence[str]],
    metrics: Sequence[Metric],
    protocol: Protocol,
    workers: int,
) -> SampleScores:
    if len(samples) != len(refs):
        raise ValueError(f"{len(samples)} examples of predictions but {len(refs)} reference lists")
    example_of = np.asarray([i for i, ss in enumerate(samples) for _ in ss], dtype=np.int64)
    flat = [protocol.text(s) for ss in samples for s in ss]
    empty = np.asarray([not s.strip() for s in flat], dtype=bool)
    keep = np.flatnonzero(~empty)
    per_example = [m for m in metrics if m.per_example]
    per_sample = {m.name: np.zeros(len(flat)) for m in per_example}
    if len(keep) and per_example:
        kept_refs = [refs[e] for e in example_of[keep].tolist()]
        kept = [flat[i] for i in keep.tolist()]
        if protocol.reduce == "mean":
            sizes = np.fromiter(map(len, kept_refs), dtype=np.int64, count=len(kept_refs))
            pair_h = [h for h, rs in zip(kept, kept_refs) for _ in rs]
            pair_r = [[r] for rs in kept_refs for r in rs]
            owner = np.repeat(np.arange(len(kept)), sizes)
            pairs = sentence_scores(per_example, pair_h, pair_r, "max", workers)
            scores = {k: np.bincount(owner, weights=v, minlength=len(kept)) / sizes for k, v in pairs.items()}
        else:
            scores = sentence_scores(per_example, kept, kept_refs, protocol.reduce, workers)
        for name, values in scores.items():
            per_sample[name][keep] = values
    corpus: dict[str, float] = {}
    excluded: dict[str, int] = {}
    stats_of: dict[str, np.ndarray] = {}
    first = [flat[i] for i in np.unique(example_of, return_index=True)[1]]
    for metric in metrics:
        if not metric.per_example:
            values, left_out = metric.corpus_scores(first, list(refs), protocol.reduce)
            corpus.update(values)
            excluded.update(left_out)
            stats = metric.corpus_statistics(first, list(refs))
            if stats is not None:
                stats_of[metric.name] = stats
    return SampleScores(example_of, empty, per_sample, corpus, excluded, corpus_stats=stats_of)


def average(values: np.ndarray, units: Sequence[str] | None) -> float:
    """Mean over examples, or (with `units`) over units of the mean of their examples."""
    if not len(values):
        return 0.0
    if units is None:
        return float(values.mean())
    index = {u: i for i, u in enumerate(dict.fromkeys(units))}
    owner = np.fromiter(map(index.__getitem__, units), dtype=np.int64, count=len(units))
    return float((np.bincount(owner, weights=values) / np.bincount(owner)).mean())


def summarize(scores: SampleScores, protocol: Protocol) -> dict:
    """Scores of a run: mean over examples (each the mean of its samples; by term first under a protocol that
    averages by term) and, for Best-of-N, the oracle."""
    units = scores.units if protocol.average == "term" else None
    mean = {k: protocol.finish(average(v, units)) for k, v in scores.per_example("mean").items()}
    out = {
        "scores": {**mean, **{k: protocol.finish(v) for k, v in scores.corpus.items()}},
        "n_examples": int(len(np.unique(scores.example_of))),
        "n_samples": int(len(scores.example_of)),
        "n_empty": int(scores.empty.sum()),
    }
    if scores.excluded:
        out["excluded"] = dict(scores.excluded)
    if out["n_samples"] > out["n_examples"]:
        out["oracle"] = {k: protocol.finish(average(v, units)) for k, v in scores.per_example("max").items()}
    return out
