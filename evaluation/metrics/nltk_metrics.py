"""METEOR and NIST from NLTK (METEOR's WordNet read offline), on NLTK word tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics import Metric, Reduce
from evaluation.metrics.settings import MetricSettings


def word_tokens(text: str) -> list[str]:
    """NLTK Treebank word tokens of one line (no sentence splitting, so no punkt download)."""
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


class Meteor(Metric):
    """METEOR (NLTK, alpha 0.9, beta 3, gamma 0.5); several references: the best one (NLTK's rule)."""

    name = "meteor"
    cpu_bound = True
    chunked = True
    packages = ("nltk",)

    def __init__(self, settings: MetricSettings | None = None):
        super().__init__(settings)
        from nltk.corpus import wordnet

        from run_config.assets import use_offline_wordnet

        use_offline_wordnet()
        wordnet.ensure_loaded()  # once here rather than in every worker

    def after_fork(self) -> None:
        """Reopen WordNet's data files in a worker: a shared file offset would corrupt its reads."""
        from nltk.corpus import wordnet

        if type(wordnet).__name__ != "LazyCorpusLoader":
            wordnet._data_file_map = {}

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        from nltk.translate.meteor_score import meteor_score

        return (
            np.asarray(
                [meteor_score([word_tokens(r) for r in rs], word_tokens(h)) for h, rs in zip(hyps, refs)],
                dtype=np.float64,
            )
            * 100.0
        )


class Nist(Metric):
    """Sentence NIST (NLTK, orders up to `nist_order`), in NIST's own units (not a percentage).

    A hypothesis with fewer tokens than `nist_order` has no n-grams of the higher orders, where NLTK
    divides by zero. `nist_short="lower-orders"` (default) scores it on the orders up to its length;
    `"zero"` scores it 0, as the original did (it caught the error as 0), and is orig-compat's rule.
    """

    name = "nist"
    cpu_bound = True
    chunked = True
    packages = ("nltk",)
    settings_used = ("nist_order", "nist_short")

    def _nist(self, hyp: list[str], refs: list[list[str]]) -> float:
        from nltk.translate.nist_score import sentence_nist

        order = self.settings.nist_order
        if not hyp or (len(hyp) < order and self.settings.nist_short == "zero"):
            return 0.0
        return sentence_nist(refs, hyp, n=min(order, len(hyp)))

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        out = []
        for h, rs in zip(hyps, refs):
            hyp, ref_tokens = word_tokens(h), [word_tokens(r) for r in rs]
            single = max(self._nist(hyp, [r]) for r in ref_tokens) if reduce != "multi" else 0.0
            multi = self._nist(hyp, ref_tokens) if reduce != "max" else 0.0
            out.append(max(single, multi))
        return np.asarray(out, dtype=np.float64)
