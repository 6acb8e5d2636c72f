"""Best-of-N's minimum-Bayes-risk selection on fixed samples made of real Urban definitions: the pick is the
sample with the highest mean utility against the others, recomputed here with an independent Moses BLEU+1."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from inference.best_of_n import bleu_utility, mbr_scores, select_sample


def moses_bleu(hyp: str, ref: str) -> float:
    """Moses sentence BLEU+1 (0..1), written out: space tokens, (m_n + 1) / (c_n + 1) for n = 1..4, brevity."""
    h, r = hyp.split(" "), ref.split(" ")
    h, r = [t for t in h if t], [t for t in r if t]
    if not h:
        return 0.0
    log_p = 0.0
    for n in range(1, 5):
        grams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
        ref_grams = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
        matches = sum(min(c, ref_grams[g]) for g, c in grams.items())
        log_p += math.log((matches + 1) / (max(len(h) - n + 1, 0) + 1)) / 4
    return math.exp(log_p + min(1 - len(r) / len(h), 0.0))


@pytest.fixture
def samples(urban_records):
    """Six samples for one input: two real definitions of a term with several, two of other terms, the first
    definition without its last word (the consensus: it and the definition agree most); sample 2 failed."""
    by_term: dict[str, list[str]] = {}
    for r in urban_records:
        by_term.setdefault(r.term, []).append(r.definition)
    term, defs = next((t, d) for t, d in by_term.items() if len(set(d)) >= 3)
    others = [d[0] for t, d in by_term.items() if t != term][:2]
    texts = [others[0], defs[0], defs[2], " ".join(defs[0].split()[:-1]), defs[1], others[1]]
    rows = [
        {"id": "x", "term": term, "context": "", "sample_idx": i, "prediction": t, "error": None}
        for i, t in enumerate(texts)
    ]
    rows[2] = {**rows[2], "prediction": None, "error": "HTTP 500"}
    return rows


def test_mbr_picks_the_sample_with_the_highest_mean_bleu_against_the_others(samples):
    ok = [r for r in samples if r["error"] is None]
    expected = [sum(moses_bleu(a["prediction"], b["prediction"]) for b in ok if b is not a) / (len(ok) - 1) for a in ok]
    assert mbr_scores([r["prediction"] for r in ok], bleu_utility) == pytest.approx(expected, abs=1e-9)
    top, second = sorted(expected, reverse=True)[:2]
    assert top > second + 1e-6  # no tie decides it
    best = ok[max(range(len(ok)), key=expected.__getitem__)]
    assert best["sample_idx"] in (1, 3)  # the two that share most n-grams
    assert select_sample(samples, "mbr") is best
    assert select_sample(list(reversed(samples)), "mbr") is best  # the order rows arrive in does not matter


def test_mbr_ties_go_to_the_first_sample(samples):
    twins = [{**samples[0], "sample_idx": 4}, samples[1], {**samples[0], "sample_idx": 3}]
    assert select_sample(twins, "mbr")["sample_idx"] == 3  # the two copies agree best; the lower index wins


def test_mbr_with_a_custom_utility_uses_it_on_every_ordered_pair(samples):
    seen = []

    def utility(hyps, refs):
        seen.extend(zip(hyps, refs))
        return [float(len(h) < len(r)) for h, r in zip(hyps, refs)]

    ok = [r for r in samples if r["error"] is None]
    picked = select_sample(samples, "mbr", utility=utility)
    assert len(seen) == len(ok) * (len(ok) - 1) and all(h != r for h, r in seen)
    assert picked["prediction"] == min((r["prediction"] for r in ok), key=len)
