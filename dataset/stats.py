"""Corpus statistics: per-source counts, unique terms, lengths, divergent (term, context) groups."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from dataset.records import Dropped, Record
from run_config.errors import DataError

MAX_DIVERGENT_SHOWN = 5


def compute_stats(items: Iterable[Record | Dropped | DataError]) -> dict:
    """Summarise records; malformed rows raise, dropped rows are counted by reason."""
    per_source: dict[str, dict] = defaultdict(
        lambda: {"records": 0, "terms": set(), "term_len": 0, "context_len": 0, "definition_len": 0}
    )
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    dropped: Counter = Counter()
    splits: Counter = Counter()
    for item in items:
        if isinstance(item, DataError):
            raise item
        if isinstance(item, Dropped):
            dropped[item.reason] += 1
            continue
        s = per_source[item.source]
        s["records"] += 1
        s["terms"].add(item.term)
        s["term_len"] += len(item.term.split())
        s["context_len"] += len(item.context.split())
        s["definition_len"] += len(item.definition.split())
        splits[item.split] += 1
        groups[(item.term, item.context)].add(item.definition)
    divergent = [(t, c, sorted(d)) for (t, c), d in groups.items() if len(d) > 1]
    all_terms = set().union(*(s["terms"] for s in per_source.values())) if per_source else set()
    return {
        "records": sum(s["records"] for s in per_source.values()),
        "unique_terms": len(all_terms),
        "splits": dict(splits),
        "dropped": dict(dropped),
        "sources": {
            src: {
                "records": s["records"],
                "unique_terms": len(s["terms"]),
                "avg_term_words": s["term_len"] / s["records"],
                "avg_context_words": s["context_len"] / s["records"],
                "avg_definition_words": s["definition_len"] / s["records"],
            }
            for src, s in sorted(per_source.items())
        },
        "divergent_groups": len(divergent),
        "divergent_examples": [
            {"term": t, "context": c, "definitions": d} for t, c, d in divergent[:MAX_DIVERGENT_SHOWN]
        ],
    }


def format_stats(stats: dict) -> str:
    """Render `compute_stats` output as a plain-text report."""
    lines = [
        f"records: {stats['records']}   unique terms: {stats['unique_terms']}   "
        f"splits: {', '.join(f'{k}={v}' for k, v in sorted(stats['splits'].items()))}"
    ]
    if stats["dropped"]:
        lines.append("dropped: " + ", ".join(f"{n} {r}" for r, n in stats["dropped"].items()))
    lines.append(f"{'source':<24}{'records':>10}{'terms':>10}{'term w':>8}{'ctx w':>8}{'def w':>8}")
    for src, s in stats["sources"].items():
        lines.append(
            f"{src:<24}{s['records']:>10}{s['unique_terms']:>10}{s['avg_term_words']:>8.2f}"
            f"{s['avg_context_words']:>8.2f}{s['avg_definition_words']:>8.2f}"
        )
    lines.append(f"divergent (term, context) groups with >1 definition: {stats['divergent_groups']}")
    for ex in stats["divergent_examples"]:
        lines.append(f"  {ex['term']!r} in {ex['context'][:60]!r}: {len(ex['definitions'])} definitions")
    return "\n".join(lines)
