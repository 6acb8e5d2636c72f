"""Resumable prediction JSONL: one row per (id, sample_idx), appended and flushed as results arrive."""

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
)


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
    }


def read_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """Read rows; a cut-off last line (a killed writer) is dropped. Returns (rows, last line was cut)."""
    if not path.is_file():
        return [], False
    rows: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                return rows, True
            raise DataError(str(path), lineno, None, f"invalid JSON: {e.msg}") from None
        if not isinstance(row, dict) or "id" not in row or "sample_idx" not in row:
            raise DataError(str(path), lineno, None, "not a prediction row (needs id and sample_idx)")
        rows.append(row)
    return rows, False


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
