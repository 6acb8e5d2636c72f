"""Evaluation by bucket: which group each prediction row falls in, for `evaluate --group-by KEY`.

`group_rows(rows, key, context)` splits prediction rows (evaluation.predictions.Prediction) into labelled
groups; the evaluate stage scores each group as it scores the whole file (scores.json["groups"][key][label]).
Keys (the term is the reference record's):

* refs: how many definitions the term has in the evaluation split: "1", "2-3", "4+".
* seen: "seen" when the term (exact string) is a term of the training references, else "unseen".
* pos: the term's WordNet part of speech: the one with the most synsets (morphy-lemmatised lookup, spaces
  as underscores; ties: noun, verb, adj, adv); "unknown" when WordNet has no synset for it.
* length: the term's whitespace tokens: "1", "2", "3+".
* source: the record's source (dataset).
* expert: the expert that weighed most in the row's `expert` field (a routed MoE's rows); "none" for a row
  without one (a dense model's, a failed generation's).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dataset.records import Record
from evaluation.predictions import Prediction

NO_GROUP = "none"
UNKNOWN = "unknown"
POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
POS_ORDER = ("noun", "verb", "adj", "adv")


@dataclass(frozen=True)
class GroupContext:
    """What the keys other than `expert` need: the evaluation split and the training terms."""

    records: Mapping[str, Record]  # evaluation split by id
    definitions: Mapping[str, int]  # term -> its definitions in the evaluation split
    train_terms: frozenset[str] | None = None  # None: no training references given

    @classmethod
    def build(cls, records: Iterable[Record], train: Iterable[Record] | None = None) -> GroupContext:
        records = list(records)
        return cls(
            {r.id: r for r in records},
            Counter(r.term for r in records),
            None if train is None else frozenset(r.term for r in train),
        )

    def term(self, p: Prediction) -> str:
        return self.records[p.id].term


def refs_bucket(n: int) -> str:
    return "1" if n == 1 else "2-3" if n <= 3 else "4+"


def length_bucket(n: int) -> str:
    return str(n) if n < 3 else "3+"


@functools.cache
def wordnet_pos(term: str) -> str:
    """The WordNet part of speech of `term` with the most synsets; "unknown" when it has none."""
    from nltk.corpus import wordnet as wn

    from run_config.assets import use_offline_wordnet

    use_offline_wordnet()
    counts = Counter(POS_NAMES[s.pos()] for s in wn.synsets(term.strip().replace(" ", "_")))
    if not counts:
        return UNKNOWN
    return max(POS_ORDER, key=lambda pos: (counts[pos], -POS_ORDER.index(pos)))


def _seen(p: Prediction, c: GroupContext) -> str:
    if c.train_terms is None:
        raise ValueError("group key 'seen' needs the training references (train_references)")
    return "seen" if c.term(p) in c.train_terms else "unseen"


_LABELS: dict[str, Callable[[Prediction, GroupContext | None], str]] = {
    "refs": lambda p, c: refs_bucket(c.definitions[c.term(p)]),
    "seen": _seen,
    "pos": lambda p, c: wordnet_pos(c.term(p)),
    "length": lambda p, c: length_bucket(len(c.term(p).split())),
    "source": lambda p, c: c.records[p.id].source,
    "expert": lambda p, c: NO_GROUP if p.expert is None else str(p.expert),
}
GROUP_KEYS = tuple(_LABELS)
NEEDS_CONTEXT = frozenset(GROUP_KEYS) - {"expert"}
_ORDERS = {
    "refs": ("1", "2-3", "4+"),
    "length": ("1", "2", "3+"),
    "seen": ("seen", "unseen"),
    "pos": (*POS_ORDER, UNKNOWN),
}


def group_rows(
    rows: Iterable[Prediction], key: str, context: GroupContext | None = None
) -> dict[str, list[Prediction]]:
    """Rows per group label of `key`, labels in natural order (buckets by size, numbers by value, "none" last)."""
    if key not in _LABELS:
        raise ValueError(f"unknown group key {key!r}; choose from {', '.join(GROUP_KEYS)}")
    if key in NEEDS_CONTEXT and context is None:
        raise ValueError(f"group key {key!r} needs the evaluation split (a GroupContext)")
    groups: dict[str, list[Prediction]] = {}
    for row in rows:
        groups.setdefault(_LABELS[key](row, context), []).append(row)
    order = _ORDERS.get(key)
    if order:
        return {label: groups[label] for label in order if label in groups}
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] == NO_GROUP, not kv[0].isdigit(), _order(kv[0]))))


def _order(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (0, label)
