"""Right word, wrong sense: is a prediction closer to its own sense's definition than to the term's others?

For a row (term, context), the candidates are the distinct definitions of the term in the evaluation split
(file order); its gold ones are those given for the row's own (term, context) pair. The prediction's
similarity to each candidate (sentence BLEU and embedding cosine, evaluation.metrics.sense) ranks them; the
gold rank is 1 + the number of other-sense candidates at least as similar as the best gold one (a tie is no
win). Per sample: accuracy@1 (100 at rank 1), reciprocal rank (x100), and the gap max - per-context (best
candidate's similarity minus best gold one's: what the `max` protocol adds over `per-context`).
Only rows whose term has a definition outside the row's own context are scored; the others are counted, as
`monosemous` (one distinct definition) or `one_context` (every definition given for this very context).
An empty prediction scores 0 on all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dataset.records import Record
from evaluation.metrics.sense import SIMILARITIES, SenseRanking
from evaluation.references import context_references

LEFT_OUT = ("monosemous", "one_context")


@dataclass(frozen=True)
class Senses:
    """The definitions a row's prediction is ranked against, and which of them are the row's own."""

    candidates: tuple[str, ...]
    gold: tuple[bool, ...]


def sense_sets(targets: Sequence[Record], pool: Sequence[Record]) -> list[Senses | str]:
    """Each target's senses, drawn from `pool` (the evaluation split), or why it is left out (LEFT_OUT)."""
    by_term: dict[str, dict[str, None]] = {}
    for r in pool:
        by_term.setdefault(r.term, {})[r.definition] = None
    own = {key: set(defs) for key, defs in context_references(pool).items()}
    out: list[Senses | str] = []
    for record in targets:
        gold_defs = own.get((record.term, record.context), set()) | {record.definition}
        candidates = tuple(dict.fromkeys([*by_term.get(record.term, {}), record.definition]))
        if len(candidates) < 2:
            out.append("monosemous")
        elif all(c in gold_defs for c in candidates):
            out.append("one_context")
        else:
            out.append(Senses(candidates, tuple(c in gold_defs for c in candidates)))
    return out


def gold_rank(similarity: np.ndarray, gold: np.ndarray) -> int:
    """1 + the number of non-gold candidates at least as similar as the most similar gold one."""
    return 1 + int((similarity[~gold] >= similarity[gold].max()).sum())


@dataclass
class SenseScores:
    """Per-sample scores (`sense_{bleu,embedding}_{acc,mrr,gap}`, 0 for unscored samples), the examples scored,
    and the counts of examples left out, by reason."""

    per_sample: dict[str, np.ndarray]
    scored: np.ndarray
    left_out: dict[str, int]


def score_senses(metric: SenseRanking, samples: Sequence[Sequence[str]], senses: Sequence[Senses | str]) -> SenseScores:
    """Rank every non-empty sample of every scored example against its senses."""
    if len(samples) != len(senses):
        raise ValueError(f"{len(samples)} examples of predictions but {len(senses)} sense sets")
    flat = [(e, s) for e, ss in enumerate(samples) for s in ss]
    per_sample = {name: np.zeros(len(flat)) for name in metric.score_names}
    live = [(k, s, senses[e]) for k, (e, s) in enumerate(flat) if isinstance(senses[e], Senses) and s.strip()]
    pair_h = [s for _, s, sense in live for _ in sense.candidates]
    pair_c = [c for _, _, sense in live for c in sense.candidates]
    similarity = metric.similarities(pair_h, pair_c) if live else {}
    start = 0
    for k, _, sense in live:
        end = start + len(sense.candidates)
        gold = np.asarray(sense.gold)
        for name in SIMILARITIES:
            values = similarity[name][start:end]
            rank = gold_rank(values, gold)
            per_sample[f"sense_{name}_acc"][k] = 100.0 if rank == 1 else 0.0
            per_sample[f"sense_{name}_mrr"][k] = 100.0 / rank
            per_sample[f"sense_{name}_gap"][k] = values.max() - values[gold].max()
        start = end
    scored = np.asarray([isinstance(s, Senses) for s in senses], dtype=bool)
    return SenseScores(per_sample, scored, {reason: sum(s == reason for s in senses) for reason in LEFT_OUT})
