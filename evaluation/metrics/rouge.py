"""ROUGE-L F-measure as rouge_score computes it, with a bit-parallel LCS and every string tokenized once.

Tokens come from rouge_score's own tokenizer (or NLTK word tokens for orig-compat) and the F-measure
from `rouge_score.scoring.fmeasure`; only the LCS length is computed differently (Hyyrö 2004: one
big-integer step per hypothesis token instead of a Python DP table), with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from evaluation.metrics import Metric, Reduce
from evaluation.metrics.nltk_metrics import word_tokens
from evaluation.metrics.settings import MetricSettings


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokens without stemming: lowercase, runs of non-[a-z0-9] as separators.

    Same output as `rouge_score.tokenize.tokenize(text, None)` (its token filter then only drops the
    empty strings that `split()` never yields), without a regex match per token.
    """
    from rouge_score.tokenize import NON_ALPHANUM_RE

    return NON_ALPHANUM_RE.sub(" ", text.lower()).split()


def token_masks(tokens: Sequence[str]) -> dict[str, int]:
    """Bit i of masks[t] is set where tokens[i] == t."""
    masks = dict(zip(tokens, (1 << i for i in range(len(tokens)))))
    if len(masks) < len(tokens):  # repeated tokens: several bits each
        masks = {}
        for i, tok in enumerate(tokens):
            masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(ref_masks: dict[str, int], ref_len: int, hyp: Sequence[str]) -> int:
    """Length of the longest common subsequence of a reference (as token masks) and `hyp`.

    Hypothesis tokens absent from the reference leave the state unchanged, so only the others are stepped.
    """
    full = (1 << ref_len) - 1
    v = full
    for mask in filter(None, map(ref_masks.get, hyp)):
        u = v & mask
        v = ((v + u) | (v - u)) & full
    return ref_len - v.bit_count()


class RougeL(Metric):
    """ROUGE-L F1 of rouge_score; several references: the best one (rouge_score's multi-reference rule)."""

    name = "rougeL"
    cpu_bound = True
    packages = ("rouge_score",)
    settings_used = ("rouge_tokenizer", "rouge_stemmer")

    def __init__(self, settings: MetricSettings | None = None):
        super().__init__(settings)
        from rouge_score import scoring

        if self.settings.rouge_tokenizer == "word":
            tokenize = word_tokens
        elif self.settings.rouge_stemmer:
            from rouge_score import tokenizers  # imports NLTK (seconds): only when stemming

            tokenize = tokenizers.DefaultTokenizer(use_stemmer=True).tokenize
        else:
            tokenize = rouge_tokens
        self._fmeasure = scoring.fmeasure
        self._parse = lru_cache(maxsize=None)(lambda text: self._prepare(tokenize(text)))

    @staticmethod
    def _prepare(tokens: list[str]) -> tuple[list[str], dict[str, int]]:
        return tokens, token_masks(tokens)

    def pair_score(self, hyp: str, ref: str) -> float:
        """ROUGE-L F1 (0..1) of one hypothesis against one reference, as `rouge_scorer._score_lcs`."""
        hyp_tokens, ref_tokens, ref_masks = self._parse(hyp)[0], *self._parse(ref)
        if not hyp_tokens or not ref_tokens:
            return 0.0
        lcs = lcs_length(ref_masks, len(ref_tokens), hyp_tokens)
        return self._fmeasure(lcs / len(hyp_tokens), lcs / len(ref_tokens))

    def sentence_scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], reduce: Reduce = "max") -> np.ndarray:
        return np.asarray([max(self.pair_score(h, r) for r in rs) for h, rs in zip(hyps, refs)]) * 100.0
