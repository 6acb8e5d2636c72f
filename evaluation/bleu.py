"""Sentence BLEU exactly as Moses `mert/sentence-bleu` (used by Huang et al. 2021 and the original code).

Tokens split on the space character only, as the program does (a tab or a no-break space stays inside
its token; `str.split()` would split there too), case-sensitive, n = 1..4, clipped counts against the
maximum count over all references, brevity penalty from the closest reference length (ties: the shorter
one), and BLEU+1 smoothing (Lin & Och 2004) on every order: p_n = (m_n + 1) / (c_n + 1). An empty
hypothesis scores 0. Pure Python/NumPy, no binary.

`BleuScorer` computes the sufficient statistics of many (hypothesis, references) items at once with
NumPy: every distinct string is tokenized once, its n-grams get integer ids, and matches are found by
sorted-key search. It finishes them with the Moses formula, or with sacrebleu's own `BLEU.compute_bleu`
(13a tokens, exp smoothing) so that the two agree with sacrebleu by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import numpy as np

ORDER = 4
Tokenize = Literal["none", "13a"]
Smooth = Literal["moses", "exp"]


def moses_tokens(text: str) -> list[str]:
    """Tokens as Moses `sentence-bleu` reads a line: split on " " only, runs of spaces giving no empty token."""
    tokens = text.split(" ")
    return tokens if "" not in tokens else [t for t in tokens if t]


def get_tokenizer(kind: Tokenize) -> Callable[[str], list[str]]:
    """Space-separated tokens ("none", Moses) or sacrebleu's 13a tokens ("13a")."""
    if kind == "none":
        return moses_tokens
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok13a = Tokenizer13a()
    return lambda text: tok13a(text.rstrip()).split()


@dataclass
class NgramTable:
    """The n-gram counts of a list of strings: rows (string, n-gram id, count) sorted by string, then id."""

    lengths: np.ndarray  # tokens per string
    row_start: np.ndarray  # rows of string s: row_start[s]:row_start[s + 1]
    gid: np.ndarray
    count: np.ndarray
    order_of: np.ndarray  # n-gram id -> order - 1
    n_ids: int


def build_ngram_table(texts: Sequence[str], tokenize: Callable[[str], list[str]]) -> NgramTable:
    """Tokenize `texts` once and count their 1..4-grams as integer ids."""
    token_lists = list(map(tokenize, texts))
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    tokens = list(chain.from_iterable(token_lists))
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    flat = np.fromiter(map(vocab.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    string_of = np.repeat(np.arange(len(texts)), lengths)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    room = lengths[string_of] - pos  # tokens from this position to the end of its string
    prev = flat
    strings, gids, orders = [], [], []
    n_ids = 0
    for n in range(1, ORDER + 1):
        at = np.flatnonzero(room >= n)
        if n == 1:
            dense, uniq_count = flat, len(vocab)
        else:
            key = prev[at] * max(len(vocab), 1) + flat[at + n - 1]
            uniq, dense = np.unique(key, return_inverse=True)
            uniq_count = len(uniq)
            prev = np.full(len(flat), -1, dtype=np.int64)
            prev[at] = dense
        strings.append(string_of[at])
        gids.append(dense[at] + n_ids if n == 1 else dense + n_ids)
        orders.append(np.full(uniq_count, n - 1, dtype=np.int64))
        n_ids += uniq_count
    key = np.concatenate(strings) * n_ids + np.concatenate(gids)
    uniq, count = np.unique(key, return_counts=True)
    row_string = uniq // max(n_ids, 1)
    return NgramTable(
        lengths,
        np.searchsorted(row_string, np.arange(len(texts) + 1)),
        uniq % max(n_ids, 1),
        count,
        np.concatenate(orders),
        n_ids,
    )


def _gather(table: NgramTable, strings: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (owner, n-gram id, count) of each string in `strings`, labelled by its owner."""
    starts, ends = table.row_start[strings], table.row_start[strings + 1]
    sizes = ends - starts
    rows = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes) + np.repeat(starts, sizes)
    return np.repeat(owners, sizes), table.gid[rows], table.count[rows]


def bleu_statistics(
    table: NgramTable, hyp: np.ndarray, ref: np.ndarray, group_of_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sufficient statistics of groups: hypothesis string hyp[g] against the strings ref[group_of_ref == g].

    Returns (matches (G, 4), totals (G, 4), hyp_len (G,), closest ref_len (G,)); matches are clipped
    by the maximum count over the group's references.
    """
    groups = len(hyp)
    r_owner, r_gid, r_count = _gather(table, ref, group_of_ref)
    r_key = r_owner * table.n_ids + r_gid
    if len(r_key) > 1 and not (np.diff(r_key) > 0).all():  # several references per group: max count per key
        order = np.argsort(r_key, kind="stable")
        r_key, r_count = r_key[order], r_count[order]
        r_key, first = np.unique(r_key, return_index=True)
        r_count = np.maximum.reduceat(r_count, first)
    h_owner, h_gid, h_count = _gather(table, hyp, np.arange(groups))
    h_key = h_owner * table.n_ids + h_gid
    at = np.minimum(np.searchsorted(r_key, h_key), max(len(r_key) - 1, 0))
    hit = r_key[at] == h_key if len(r_key) else np.zeros(len(h_key), dtype=bool)
    clipped = np.minimum(h_count[hit], r_count[at[hit]])
    matches = (
        np.bincount(h_owner[hit] * ORDER + table.order_of[h_gid[hit]], weights=clipped, minlength=groups * ORDER)
        .reshape(groups, ORDER)
        .astype(np.int64)
    )
    hyp_len = table.lengths[hyp]
    totals = np.maximum(hyp_len[:, None] - np.arange(ORDER)[None, :], 0)
    ref_len = table.lengths[ref]
    diff = np.abs(ref_len - hyp_len[group_of_ref])
    ranked = np.lexsort((ref_len, diff, group_of_ref))
    closest = ref_len[ranked[np.unique(group_of_ref[ranked], return_index=True)[1]]]
    return matches, totals, hyp_len, closest


def moses_points(matches: np.ndarray, totals: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """Moses BLEU+1 in BLEU points (0..100); 0 for an empty hypothesis."""
    log_bleu = (np.log(matches + 1.0) - np.log(totals + 1.0)).sum(axis=1) / ORDER
    safe_len = np.maximum(hyp_len, 1)
    log_bleu += np.minimum(1.0 - ref_len / safe_len, 0.0)
    return np.where(hyp_len > 0, np.exp(log_bleu) * 100.0, 0.0)


def sacrebleu_points(matches: np.ndarray, totals: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """sacrebleu's sentence BLEU (exp smoothing, effective order) in points, by sacrebleu's own formula."""
    from sacrebleu.metrics.bleu import BLEU

    return np.asarray(
        [
            BLEU.compute_bleu(m.tolist(), t.tolist(), int(h), int(r), smooth_method="exp", effective_order=True).score
            for m, t, h, r in zip(matches, totals, hyp_len, ref_len)
        ],
        dtype=np.float64,
    )


class BleuScorer:
    """Sentence BLEU points of many items at once (Moses by default, or sacrebleu's settings)."""

    def __init__(self, tokenize: Tokenize = "none", smooth: Smooth = "moses"):
        self.tokenize = get_tokenizer(tokenize)
        self.finish = moses_points if smooth == "moses" else sacrebleu_points

    def scores(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], multi: bool) -> np.ndarray:
        """BLEU points of each hypothesis: against all its references at once (`multi`), or the
        maximum over single references."""
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
        for r in refs:
            if isinstance(r, str):
                raise TypeError("references must be a sequence of strings, not one string")
            if not r:
                raise ValueError("at least one reference is needed")
        if not hyps:
            return np.zeros(0)
        flat_refs = list(chain.from_iterable(refs))
        index = {t: i for i, t in enumerate(dict.fromkeys(chain(hyps, flat_refs)))}
        hyp = np.fromiter(map(index.__getitem__, hyps), dtype=np.int64, count=len(hyps))
        ref = np.fromiter(map(index.__getitem__, flat_refs), dtype=np.int64, count=len(flat_refs))
        sizes = np.fromiter(map(len, refs), dtype=np.int64, count=len(refs))
        table = build_ngram_table(list(index), self.tokenize)
        if multi:
            return self.finish(*bleu_statistics(table, hyp, ref, np.repeat(np.arange(len(hyps)), sizes)))
        pair_scores = self.finish(*bleu_statistics(table, np.repeat(hyp, sizes), ref, np.arange(len(ref))))
        return np.maximum.reduceat(pair_scores, np.cumsum(sizes) - sizes)


def moses_sentence_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """Return Moses smoothed sentence BLEU of `hypothesis` against all `references` at once (0..1)."""
    return float(BleuScorer().scores([hypothesis], [references], multi=True)[0]) / 100.0


def moses_max_single_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """Maximum of single-reference Moses BLEU over the references (the paper's `max` protocol)."""
    return float(BleuScorer().scores([hypothesis], [references], multi=False)[0]) / 100.0
