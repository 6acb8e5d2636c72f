"""Sentence BLEU exactly as Moses `mert/sentence-bleu` (used by Huang et al. 2021 and the original code).

Whitespace tokens, case-sensitive, n = 1..4, clipped counts against the maximum count over all
references, brevity penalty from the closest reference length (ties: the shorter one), and BLEU+1
smoothing (Lin & Och 2004) on every order: p_n = (m_n + 1) / (c_n + 1). Scores are in [0, 1];
an empty hypothesis scores 0. Pure Python, no binary.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

ORDER = 4


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def closest_ref_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """Reference length closest to the hypothesis length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def moses_sentence_bleu(hypothesis: str, references: Sequence[str], smoothing: float = 1.0) -> float:
    """Return Moses smoothed sentence BLEU of `hypothesis` against all `references` at once (0..1)."""
    if isinstance(references, str):
        raise TypeError("references must be a sequence of strings, not one string")
    if not references:
        raise ValueError("at least one reference is needed")
    hyp = hypothesis.split()
    if not hyp:
        return 0.0
    refs = [r.split() for r in references]
    log_bleu = 0.0
    for n in range(1, ORDER + 1):
        hyp_counts = _ngrams(hyp, n)
        max_ref: Counter = Counter()
        for ref in refs:
            max_ref |= _ngrams(ref, n)
        matched = sum(min(c, max_ref[g]) for g, c in hyp_counts.items())
        total = max(len(hyp) - n + 1, 0)
        log_bleu += math.log(matched + smoothing) - math.log(total + smoothing)
    log_bleu /= ORDER
    brevity = 1.0 - closest_ref_length(len(hyp), [len(r) for r in refs]) / len(hyp)
    if brevity < 0.0:
        log_bleu += brevity
    return math.exp(log_bleu)


def moses_max_single_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """Maximum of single-reference Moses BLEU over the references (the paper's `max` protocol)."""
    return max(moses_sentence_bleu(hypothesis, [r]) for r in references)
