"""BLEU: Moses sentence BLEU (the paper's, per example) and sacrebleu corpus BLEU (standard, for comparison)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.bleu import BleuScorer
from evaluation.metrics import Metric, Reduce, check_inputs
from evaluation.metrics.settings import MetricSettings


class SentenceBleu(Metric):
    """Sentence BLEU as Moses `sentence-bleu` (BLEU+1 on every order, closest-reference brevity penalty)."""

    name = "bleu"
    cpu_bound = True
    settings_used = ("bleu_tokenize", "bleu_smooth")

    def __init__(self, settings: MetricSettings | None = None):
        super().__init__(settings)
        self.scorer = BleuScorer(self.settings.bleu_tokenize, self.settings.bleu_smooth)

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        if reduce == "best":
            return np.maximum(self.scorer.scores(hyps, refs, multi=True), self.scorer.scores(hyps, refs, multi=False))
        return self.scorer.scores(hyps, refs, multi=reduce == "multi")


class CorpusSacreBleu(Metric):
    """Standard corpus BLEU from sacrebleu (13a tokens, exp smoothing, all references of each example)."""

    name = "sacrebleu"
    per_example = False
    packages = ("sacrebleu",)

    def compute(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> dict[str, float]:
        import sacrebleu

        check_inputs(self.name, hyps, refs)
        width = max((len(r) for r in refs), default=1)
        streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
        return {self.name: float(sacrebleu.corpus_bleu(list(hyps), streams).score)}
