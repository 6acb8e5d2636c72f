"""Sentence BLEU exactly as Moses `mert/sentence-bleu` (used by Huang et al. 2021 and the original code).

Whitespace tokens, case-sensitive, n = 1..4, clipped counts against the maximum count over all
references, brevity penalty from the closest reference length (ties: the shorter one), and BLEU+1
smoothing (Lin & Och 2004) on every order: p_n = (m_n + 1) / (c_n + 1). Scores are in [0, 1];
an empty hypothesis scores 0. Pure Python, no binary.

`BleuScorer` computes the same sufficient statistics for many (hypothesis, references) items with
every string tokenized and counted once; it can finish them with the Moses formula or with
sacrebleu's own `BLEU.compute_bleu` (13a tokens, exp smoothing) so that both agree by construction.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import chain
from typing import Literal

ORDER = 4
Tokenize = Literal["none", "13a"]
Smooth = Literal["moses", "exp"]


def ngram_counts(tokens: Sequence[str]) -> Counter:
    """Counts of all 1..4-grams of `tokens` (tuples) in one Counter."""
    t1, t2, t3 = tokens[1:], tokens[2:], tokens[3:]
    return Counter(chain(zip(tokens), zip(tokens, t1), zip(tokens, t1, t2), zip(tokens, t1, t2, t3)))


def closest_ref_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """Reference length closest to the hypothesis length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def bleu_statistics(hyp: tuple[int, Counter], refs: Sequence[tuple[int, Counter]]) -> tuple[list[int], list[int], int, int]:
    """Return (matches, totals, hyp_len, closest ref_len) of one hypothesis against all `refs` at once.

    Each argument is (length, ngram_counts). Matches are clipped by the maximum count over references.
    """
    hyp_len, hyp_counts = hyp
    matches = [0] * ORDER
    if len(refs) == 1:
        ref_counts = refs[0][1]
        for g in hyp_counts.keys() & ref_counts.keys():
            matches[len(g) - 1] += min(hyp_counts[g], ref_counts[g])
    else:
        for g, c in hyp_counts.items():
            best = max(r[1].get(g, 0) for r in refs)
            if best:
                matches[len(g) - 1] += min(c, best)
    totals = [max(hyp_len - n, 0) for n in range(ORDER)]
    return matches, totals, hyp_len, closest_ref_length(hyp_len, [r[0] for r in refs])


def moses_bleu_from_statistics(matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int,
                               smoothing: float = 1.0) -> float:
    """Moses smoothed BLEU (0..1) from sufficient statistics; 0 for an empty hypothesis."""
    if hyp_len == 0:
        return 0.0
    log_bleu = sum(math.log(m + smoothing) - math.log(t + smoothing) for m, t in zip(matches, totals)) / ORDER
    brevity = 1.0 - ref_len / hyp_len
    if brevity < 0.0:
        log_bleu += brevity
    return math.exp(log_bleu)


def moses_points(matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int) -> float:
    """Moses BLEU+1 in BLEU points (0..100)."""
    return moses_bleu_from_statistics(matches, totals, hyp_len, ref_len) * 100.0


def sacrebleu_points(matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int) -> float:
    """sacrebleu's sentence BLEU (exp smoothing, effective order) in points, by sacrebleu's own formula."""
    from sacrebleu.metrics.bleu import BLEU

    return BLEU.compute_bleu(list(matches), list(totals), hyp_len, ref_len, smooth_method="exp",
                             effective_order=True).score


def _split(text: str) -> list[str]:
    return text.split()


def get_tokenizer(kind: Tokenize) -> Callable[[str], list[str]]:
    """Whitespace tokens ("none", Moses) or sacrebleu's 13a tokens ("13a")."""
    if kind == "none":
        return _split
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok13a = Tokenizer13a()
    return lambda text: tok13a(text.rstrip()).split()


class BleuScorer:
    """Sentence BLEU of many items; every distinct string is tokenized and n-gram counted once."""

    def __init__(self, tokenize: Tokenize = "none", smooth: Smooth = "moses"):
        self.tokenize = get_tokenizer(tokenize)
        self.finish = moses_points if smooth == "moses" else sacrebleu_points
        self._counts = lru_cache(maxsize=None)(self._count)

    def _count(self, text: str) -> tuple[int, Counter]:
        tokens = self.tokenize(text)
        return len(tokens), ngram_counts(tokens)

    def prepare(self, texts: Iterable[str]) -> None:
        """Tokenize and count `texts` now (cached for later calls)."""
        for text in texts:
            self._counts(text)

    def multi(self, hypothesis: str, references: Sequence[str]) -> float:
        """BLEU points (0..100) against all references at once (multi-reference BLEU)."""
        if isinstance(references, str):
            raise TypeError("references must be a sequence of strings, not one string")
        if not references:
            raise ValueError("at least one reference is needed")
        hyp = self._counts(hypothesis)
        if hyp[0] == 0:
            return 0.0
        return self.finish(*bleu_statistics(hyp, [self._counts(r) for r in references]))

    def max_single(self, hypothesis: str, references: Sequence[str]) -> float:
        """Maximum over references of single-reference BLEU points (0..100)."""
        return max(self.multi(hypothesis, [r]) for r in references)


def moses_sentence_bleu(hypothesis: str, references: Sequence[str], smoothing: float = 1.0) -> float:
    """Return Moses smoothed sentence BLEU of `hypothesis` against all `references` at once (0..1)."""
    if isinstance(references, str):
        raise TypeError("references must be a sequence of strings, not one string")
    if not references:
        raise ValueError("at least one reference is needed")
    hyp = hypothesis.split()
    if not hyp:
        return 0.0
    refs = [(len(r), ngram_counts(r)) for r in (ref.split() for ref in references)]
    return moses_bleu_from_statistics(*bleu_statistics((len(hyp), ngram_counts(hyp)), refs), smoothing=smoothing)


def moses_max_single_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """Maximum of single-reference Moses BLEU over the references (the paper's `max` protocol)."""
    return max(moses_sentence_bleu(hypothesis, [r]) for r in references)
