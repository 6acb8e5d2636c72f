"""Evaluation by bucket: which group each prediction row falls in, for `evaluate --group-by KEY`.

`group_rows(rows, key)` splits prediction rows (evaluation.predictions.Prediction) into labelled groups; the
evaluate stage scores each group as it scores the whole file (scores.json["groups"][key][label]). Keys:

* expert: the expert that weighed most in the row's `expert` field (a routed MoE's rows); "none" for a row
  without one (a dense model's, a failed generation's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from evaluation.predictions import Prediction

NO_GROUP = "none"
_LABELS: dict[str, Callable[[Prediction], str]] = {
    "expert": lambda p: NO_GROUP if p.expert is None else str(p.expert),
}
GROUP_KEYS = tuple(_LABELS)


def group_rows(rows: Iterable[Prediction], key: str) -> dict[str, list[Prediction]]:
    """Rows per group label of `key`, labels in natural order (numbers by value, "none" last)."""
    if key not in _LABELS:
        raise ValueError(f"unknown group key {key!r}; choose from {', '.join(GROUP_KEYS)}")
    groups: dict[str, list[Prediction]] = {}
    for row in rows:
        groups.setdefault(_LABELS[key](row), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] == NO_GROUP, not kv[0].isdigit(), _order(kv[0]))))


def _order(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (0, label)
