"""Reference sets for the one-to-many protocol: every definition of a term in the evaluation split."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from dataset.records import Record


def term_references(records: Iterable[Record]) -> dict[str, list[str]]:
    """Map term -> all its definitions in `records` (file order, never deduplicated)."""
    refs: dict[str, list[str]] = defaultdict(list)
    for r in records:
        refs[r.term].append(r.definition)
    return dict(refs)


def context_references(records: Iterable[Record]) -> dict[tuple[str, str], list[str]]:
    """Map (term, context) -> the definitions given for that exact pair (divergent groups have >1)."""
    refs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        refs[(r.term, r.context)].append(r.definition)
    return dict(refs)
