"""BLEU: Moses sentence BLEU (the paper's, per example), NLTK sentence BLEU with smoothing method 2 (Giulianelli
et al.'s), and sacrebleu corpus BLEU (standard, for comparison)."""

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
        nltk = self.settings.bleu_smooth == "nltk-method2"
        self.scorer = None if nltk else BleuScorer(self.settings.bleu_tokenize, self.settings.bleu_smooth)

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        if self.scorer is None:
            return nltk_method2_scores(hyps, refs, reduce)
        if reduce == "best":
            return np.maximum(self.scorer.scores(hyps, refs, multi=True), self.scorer.scores(hyps, refs, multi=False))
        return self.scorer.scores(hyps, refs, multi=reduce == "multi")


def nltk_method2(hyp: str, refs: Sequence[str]) -> float:
    """NLTK sentence BLEU (0-100) of whitespace tokens, smoothing method 2, auto_reweigh for short hypotheses
    (off for an empty one, as Giulianelli et al.); `refs` scored as one multi-reference set."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = hyp.split()
    return 100.0 * sentence_bleu(
        [r.split() for r in refs], tokens, smoothing_function=SmoothingFunction().method2, auto_reweigh=bool(tokens)
    )


def nltk_method2_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce) -> np.ndarray:
    """`nltk_method2` of each hypothesis: max over single references, multi-reference, or the larger of both."""
    out = []
    for h, rs in zip(hyps, refs):
        single = max(nltk_method2(h, [r]) for r in rs) if reduce != "multi" else 0.0
        multi = nltk_method2(h, rs) if reduce in ("multi", "best") else 0.0
        out.append(max(single, multi))
    return np.asarray(out, dtype=np.float64)


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

    def corpus_statistics(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray:
        """sacrebleu's per-segment statistics (hypothesis and closest reference lengths, n-gram matches, totals)."""
        from sacrebleu.metrics.bleu import BLEU

        check_inputs(self.name, hyps, refs)
        width = max((len(r) for r in refs), default=1)
        streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
        return np.asarray(BLEU()._extract_corpus_statistics(list(hyps), streams), dtype=np.int64).reshape(len(hyps), -1)

    def from_statistics(self, sums: np.ndarray) -> float:
        from sacrebleu.metrics.bleu import BLEU

        return float(BLEU()._compute_score_from_stats([int(x) for x in sums]).score)
