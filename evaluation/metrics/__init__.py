"""One unit per metric and the METRICS registry (name -> class); heavy packages load inside each metric.

Every metric declares `name` (its key in scores.json), `higher_is_better`, whether it scores single
examples (`per_example`) or only a corpus, and `compute(hyps, refs) -> dict[str, float]` on the
0-100 scale (NIST in its own units). Per-example metrics also give `sentence_scores`, whose
`reduce` is how several references combine: "max" (max over single references), "multi" (one
multi-reference score) or "best" (the larger of the two, the original code's BLEU); "mean" (the mean over
single references) is done by evaluation.scoring, which hands metrics single references under "max".
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import version
from typing import ClassVar, Literal

import numpy as np

from evaluation.metrics.settings import MetricSettings

Reduce = Literal["max", "multi", "best", "mean"]


class Metric:
    """A metric unit: settings in, scores out."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    per_example: ClassVar[bool] = True
    cpu_bound: ClassVar[bool] = False  # no model: may run in a forked worker process
    chunked: ClassVar[bool] = False  # slow pure-Python work per example: split over workers
    packages: ClassVar[tuple[str, ...]] = ()
    settings_used: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: MetricSettings | None = None):
        self.settings = settings or MetricSettings()

    def after_fork(self) -> None:
        """Drop state a forked worker must not share with its parent (open files); no-op by default."""

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        """Score each hypothesis against its references (0-100)."""
        raise NotImplementedError(f"{self.name} is a corpus-level metric")

    def compute(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> dict[str, float]:
        """Return {name: score}: the mean sentence score, or the corpus score."""
        check_inputs(self.name, hyps, refs)
        return {self.name: float(np.mean(self.sentence_scores(hyps, refs, reduce))) if hyps else 0.0}

    def corpus_scores(
        self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max"
    ) -> tuple[dict[str, float], dict[str, int]]:
        """`compute`'s scores and the counts of items the metric left out (MAUVE's empty texts; none here)."""
        return self.compute(hyps, refs, reduce), {}

    def corpus_statistics(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray | None:
        """Per-example sufficient statistics (n, k) whose column sums give the corpus score via
        `from_statistics` (bootstrap CIs without recomputing); None for a corpus metric that has none."""
        return None

    def from_statistics(self, sums: np.ndarray) -> float:
        """The corpus score of summed `corpus_statistics` rows."""
        raise NotImplementedError(f"{self.name} has no sufficient statistics")

    def signature(self) -> dict[str, object]:
        """Settings and package versions that determine this metric's numbers."""
        return {**{k: getattr(self.settings, k) for k in self.settings_used}, **{p: version(p) for p in self.packages}}


def check_inputs(name: str, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{name}: {len(hyps)} hypotheses but {len(refs)} reference lists")
    for i, r in enumerate(refs):
        if isinstance(r, str) or not r:
            raise ValueError(f"{name}: item {i}: references must be a non-empty list of strings")


# name -> "module:Class"; aliases map other spellings onto a name.
METRICS: dict[str, str] = {
    "bleu": "evaluation.metrics.bleu:SentenceBleu",
    "sacrebleu": "evaluation.metrics.bleu:CorpusSacreBleu",
    "rougeL": "evaluation.metrics.rouge:RougeL",
    "meteor": "evaluation.metrics.nltk_metrics:Meteor",
    "nist": "evaluation.metrics.nltk_metrics:Nist",
    "bertscore": "evaluation.metrics.bertscore:BertScore",
    "moverscore": "evaluation.metrics.moverscore:MoverScore",
    "mauve": "evaluation.metrics.mauve:Mauve",
}
NEURAL_METRICS = ("bertscore", "moverscore", "mauve")  # those with an encoder on `device`, in `dtype`
ALIASES = {
    "rouge": "rougeL",
    "rouge-l": "rougeL",
    "rougel": "rougeL",
    "bert-score": "bertscore",
    "mover-score": "moverscore",
    "corpus_bleu": "sacrebleu",
}


def resolve_names(names: Sequence[str]) -> list[str]:
    """Map user spellings to registry names (order kept, repeats dropped); unknown names suggest close ones."""
    out: list[str] = []
    for raw in names:
        name = ALIASES.get(raw, ALIASES.get(raw.lower(), raw))
        if name not in METRICS:
            choices = sorted(METRICS) + sorted(ALIASES)
            close = difflib.get_close_matches(raw, choices, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(f"unknown metric {raw!r}{hint}; choose from {', '.join(sorted(METRICS))}")
        if name not in out:
            out.append(name)
    return out


def get_metric(name: str, settings: MetricSettings | None = None) -> Metric:
    """Instantiate the metric registered under `name` (or an alias)."""
    (resolved,) = resolve_names([name])
    module, cls = METRICS[resolved].split(":")
    return getattr(import_module(module), cls)(settings)


def best_per_example(pair_scores: Sequence[float], sizes: Sequence[int]) -> np.ndarray:
    """Max of flattened (hypothesis, single reference) scores within each example's block."""
    scores = np.asarray(pair_scores, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.maximum.reduceat(scores, starts) if len(scores) else np.zeros(0)


def flatten_pairs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[list[str], list[str], list[int]]:
    """(hypothesis, reference) pairs of every example, flattened, and each example's number of pairs."""
    flat_h = [h for h, rs in zip(hyps, refs) for _ in rs]
    flat_r = [r for rs in refs for r in rs]
    return flat_h, flat_r, [len(rs) for rs in refs]
