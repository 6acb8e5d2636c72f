"""Best-of-N: pick one of an input's N samples by likelihood, the oracle verifier, a reward model, or minimum
Bayes risk (the sample with the highest mean utility against the other samples: no references, no reward model)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluation.bleu import BleuScorer, moses_max_single_bleu

Row = dict[str, Any]
# (term, context, candidates) -> one score per candidate
RewardFn = Callable[[str, str, Sequence[str]], Sequence[float]]
# (hypotheses, references) -> the utility of each (hypothesis, reference) pair
UtilityFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def bleu_utility(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Moses sentence BLEU (0..1) of each hypothesis against its one reference (evaluation.bleu)."""
    return (BleuScorer().scores(list(hyps), [[r] for r in refs], multi=True) / 100.0).tolist()


def mbr_scores(candidates: Sequence[str], utility: UtilityFn) -> list[float]:
    """Each candidate's mean utility against every other candidate as the reference (one utility call)."""
    n = len(candidates)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    values = utility([candidates[i] for i, _ in pairs], [candidates[j] for _, j in pairs])
    totals = [0.0] * n
    for (i, _), value in zip(pairs, values, strict=True):
        totals[i] += float(value)
    return [t / max(n - 1, 1) for t in totals]


def _argmax(rows: Sequence[Row], scores: Sequence[float]) -> Row:
    """Highest score; ties go to the lowest sample_idx."""
    best = max(range(len(rows)), key=lambda i: (scores[i], -rows[i]["sample_idx"]))
    return rows[best]


def oracle_scores(rows: Sequence[Row], references: Sequence[str]) -> list[float]:
    """Moses BLEU of each sample against its best single reference (the paper's oracle, Fig. 4)."""
    return [moses_max_single_bleu(r["prediction"], references) for r in rows]


def select_sample(
    rows: Sequence[Row],
    method: str,
    *,
    references: Sequence[str] | None = None,
    reward: RewardFn | None = None,
    utility: UtilityFn = bleu_utility,
) -> Row:
    """Return the selected row of one input; with no successful sample, its first error row."""
    ok = sorted((r for r in rows if r.get("error") is None), key=lambda r: r["sample_idx"])
    if not ok:
        return min(rows, key=lambda r: r["sample_idx"])
    if method == "first" or len(ok) == 1:
        return ok[0]
    if method == "likelihood":
        return _argmax(ok, [r["logprob"] if r.get("logprob") is not None else float("-inf") for r in ok])
    if method == "oracle":
        if not references:
            raise ValueError(f"oracle selection needs references for term {ok[0]['term']!r}")
        return _argmax(ok, oracle_scores(ok, references))
    if method == "orm":
        if reward is None:
            raise ValueError("orm selection needs a reward model")
        return _argmax(ok, list(reward(ok[0]["term"], ok[0]["context"], [r["prediction"] for r in ok])))
    if method == "mbr":
        return _argmax(ok, mbr_scores([r["prediction"] for r in ok], utility))
    raise ValueError(f"unknown selection {method!r}; choose from first, likelihood, oracle, orm, mbr")


def select_all(
    rows_by_id: Mapping[str, Sequence[Row]],
    method: str,
    *,
    references: Mapping[str, Sequence[str]] | None = None,
    reward: RewardFn | None = None,
    utility: UtilityFn = bleu_utility,
) -> dict[str, Row]:
    """Select one row per input id."""
    return {
        item_id: select_sample(
            rows, method, reward=reward, references=(references or {}).get(rows[0]["term"]), utility=utility
        )
        for item_id, rows in rows_by_id.items()
    }
