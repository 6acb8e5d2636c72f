"""The prediction-row format, owned here alone: the rows `infer` writes (and resumes) and `evaluate` reads.

One JSON object per line, fields in ROW_FIELDS order. `prediction` is the scored text and `raw` the model's
text as it came; a failed generation has `"prediction": null` and the reason in `error`, never both. A file
written by other tools needs only `id` and `prediction`; `model`, `seed` and `sample_idx` (0 when absent)
tell runs and Best-of-N samples apart. A routed MoE's rows say which expert answered: `expert` is one expert id,
or the experts that were mixed as `[[id, weight], ...]` heaviest first, and `router_margin` how sure the router
was (training/moe/routing.py defines it per policy). A bad line is a DataError naming the file, the line and the
field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from run_config.errors import DataError
from run_config.runtime import atomic_open

ROW_FIELDS = (
    "id",
    "term",
    "context",
    "prediction",
    "raw",
    "model",
    "seed",
    "sample_idx",
    "latency_s",
    "error",
    "logprob",
    "expert",
    "router_margin",
)
# The type of each field when it is not null (an int is a number too; a bool is neither).
_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "term": str,
    "context": str,
    "prediction": str,
    "raw": str,
    "model": str,
    "seed": int,
    "sample_idx": int,
    "latency_s": (int, float),
    "error": str,
    "logprob": (int, float),
    "router_margin": (int, float),
}
Expert = int | list[list[int | float]]


def make_row(
    item_id: str,
    term: str,
    context: str,
    *,
    prediction: str | None,
    model: str,
    seed: int,
    sample_idx: int,
    latency_s: float,
    error: str | None,
    logprob: float | None = None,
    raw: str | None = None,
    expert: Expert | None = None,
    router_margin: float | None = None,
) -> dict[str, Any]:
    """Build one output row; a failed request has `prediction` null and the reason in `error`. `raw` is the
    model's text as it came (null when there was none), `prediction` the scored text parsed from it."""
    if (prediction is None) == (error is None):
        raise ValueError("a row has either a prediction or an error")
    return {
        "id": item_id,
        "term": term,
        "context": context,
        "prediction": prediction,
        "raw": raw,
        "model": model,
        "seed": seed,
        "sample_idx": sample_idx,
        "latency_s": round(latency_s, 4),
        "error": error,
        "logprob": logprob,
        "expert": expert,
        "router_margin": None if router_margin is None else round(router_margin, 6),
    }


def expert_value(experts: list[int], weights: list[float]) -> Expert:
    """The `expert` field: the id when one expert answered, else `[[id, weight], ...]` heaviest first."""
    if len(experts) == 1:
        return int(experts[0])
    pairs = sorted(zip(experts, weights), key=lambda p: (-p[1], p[0]))
    return [[int(e), round(float(w), 6)] for e, w in pairs]


def top_expert(value: Expert | None) -> int | None:
    """The expert that weighed most in a row's `expert` field (None when the row names none)."""
    if value is None or isinstance(value, int):
        return value
    return int(value[0][0])


def _expert_error(value: Any) -> str | None:
    """Why `value` is not an `expert` field, or None when it is one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 0 else f"expected an expert id >= 0, got {value}"
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(p, list)
            and len(p) == 2
            and isinstance(p[0], int)
            and not isinstance(p[0], bool)
            and p[0] >= 0
            and isinstance(p[1], (int, float))
            and not isinstance(p[1], bool)
            for p in value
        )
    )
    return None if ok else f"expected an expert id or [[id, weight], ...], got {json.dumps(value)[:40]}"


def check_row(obj: Any, path: str | Path, line: int) -> dict[str, Any]:
    """Validate one parsed line; return it with `sample_idx` 0 when absent or null."""
    if not isinstance(obj, dict):
        raise DataError(str(path), line, None, f"expected a JSON object, got {type(obj).__name__}")
    for key, kind in _TYPES.items():
        value = obj.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            name = kind.__name__ if isinstance(kind, type) else "number"
            raise DataError(str(path), line, key, f"expected {name}, got {json.dumps(value)[:40]}")
    if obj.get("expert") is not None and (why := _expert_error(obj["expert"])):
        raise DataError(str(path), line, "expert", why)
    if not obj.get("id"):
        raise DataError(str(path), line, "id", "missing" if obj.get("id") is None else "empty")
    if obj.get("prediction") is None and not obj.get("error"):
        raise DataError(str(path), line, "prediction", "missing (null needs the reason in error)")
    if obj.get("prediction") is not None and obj.get("error") is not None:
        raise DataError(str(path), line, "error", "set beside a prediction (a row has either a prediction or an error)")
    return obj if obj.get("sample_idx") is not None else {**obj, "sample_idx": 0}


def numbered_rows(path: str | Path, tolerate_cut: bool = False) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """(line number, row) of every non-blank line. With `tolerate_cut`, a last line cut off before its newline
    (a killed writer) is dropped instead of being an error. Returns (rows, whether a line was dropped)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(str(path), line_no, None, "invalid UTF-8 bytes") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                if tolerate_cut and not raw.endswith(b"\n"):
                    return rows, True
                raise DataError(str(path), line_no, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
            rows.append((line_no, check_row(obj, path, line_no)))
    return rows, False


def read_rows(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """Rows of a file `infer` writes (none when it does not exist yet); a cut-off last line is dropped.
    Returns (rows, last line was cut)."""
    if not Path(path).is_file():
        return [], False
    rows, cut = numbered_rows(path, tolerate_cut=True)
    return [row for _, row in rows], cut


class ResumableJsonl:
    """Append-only rows; on open, error rows and a cut-off tail are dropped so they are redone."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        rows, cut = read_rows(self.path)
        kept: dict[tuple[str, int], dict[str, Any]] = {}
        for row in rows:
            if row.get("error") is None:
                kept.setdefault((row["id"], row["sample_idx"]), row)
        self.dropped_errors = sum(1 for r in rows if r.get("error") is not None)
        if cut or len(kept) != len(rows):
            with atomic_open(self.path) as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept.values())
        self.done = set(kept)
        self._file: IO | None = None

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it, so a kill loses at most the line being written."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        if row["error"] is None:
            self.done.add((row["id"], row["sample_idx"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; return how many."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
