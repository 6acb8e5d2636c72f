"""The one record type of the toolkit and its JSONL reading/writing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from run_config.errors import DataError

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "dev": "valid",
    "val": "valid",
    "test": "test",
    "testing": "test",
}
FIELDS = ("id", "term", "context", "definition", "source", "split")


@dataclass(frozen=True, slots=True)
class Record:
    """One (term, context, definition) instance."""

    id: str
    term: str
    context: str
    definition: str
    source: str
    split: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "term": self.term,
                "context": self.context,
                "definition": self.definition,
                "source": self.source,
                "split": self.split,
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True)
class Dropped:
    """A row that was read but filtered out, with the reason (always counted, never silent)."""

    reason: str
    line: int


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace (incl. newlines) to one space and strip."""
    return " ".join(text.split())


def normalize_split(value: str) -> str | None:
    """Map split spellings (dev, validation, ...) to train/valid/test; None if unknown."""
    return _SPLIT_ALIASES.get(value.strip().lower())


def split_from_filename(path: str | Path) -> str | None:
    """Infer the split from a file name such as `test.jsonl` or `Urban_test.csv`."""
    stem = Path(path).name.split(".")[0].lower()
    for token in reversed(stem.replace("-", "_").split("_")):
        split = normalize_split(token)
        if split:
            return split
    return None


def parse_record_line(
    line: str, path: str | Path, lineno: int, default_source: str | None = None, default_split: str | None = None
) -> Record | Dropped:
    """Parse one JSONL line (ours, or the original `{term, context, definition, source}` format)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(str(path), lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(str(path), lineno, None, f"expected a JSON object, got {type(obj).__name__}")
    values: dict[str, str] = {}
    for key in ("term", "context", "definition"):
        if key not in obj:
            raise DataError(str(path), lineno, key, "missing")
        if not isinstance(obj[key], str):
            raise DataError(str(path), lineno, key, f"expected a string, got {json.dumps(obj[key])[:40]}")
        values[key] = normalize_space(obj[key])
        if not values[key]:
            return Dropped(f"empty {key}", lineno)
    for key in ("id", "source", "split"):
        if key in obj and not isinstance(obj[key], str):
            raise DataError(str(path), lineno, key, f"expected a string, got {json.dumps(obj[key])[:40]}")
    source = obj.get("source") or default_source or "unknown"
    split_raw = obj.get("split") or default_split
    if split_raw is None:
        raise DataError(str(path), lineno, "split", "missing (no split in the file name either; pass --split)")
    split = normalize_split(split_raw)
    if split is None:
        raise DataError(str(path), lineno, "split", f"unknown split {split_raw!r} (use train/valid/test)")
    rid = obj.get("id") or f"{Path(path).stem}:{lineno}"
    return Record(rid, values["term"], values["context"], values["definition"], source, split)


def iter_jsonl(
    path: str | Path, default_source: str | None = None, default_split: str | None = None
) -> Iterator[tuple[int, Record | Dropped | DataError]]:
    """Stream (line number, record-or-drop-or-error) from a JSONL file; blank lines are skipped."""
    split = default_split or split_from_filename(path)
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if _has_surrogates(line):
                yield lineno, DataError(str(path), lineno, None, "invalid UTF-8 bytes")
                continue
            try:
                yield lineno, parse_record_line(line, path, lineno, default_source, split)
            except DataError as e:
                yield lineno, e


def iter_records(path: str | Path) -> Iterator[tuple[int, Record]]:
    """Stream (line number, record) of a preprocessed JSONL file; the first bad line or repeated id raises."""
    first_line: dict[str, int] = {}
    for lineno, item in iter_jsonl(path):
        if isinstance(item, DataError):
            raise item
        if isinstance(item, Dropped):
            raise DataError(str(path), item.line, None, item.reason)
        if item.id in first_line:
            raise DataError(
                str(path), lineno, "id", f"duplicate record id {item.id!r} (first on line {first_line[item.id]})"
            )
        first_line[item.id] = lineno
        yield lineno, item


def read_records(path: str | Path) -> Iterator[Record]:
    """Stream the records of a preprocessed JSONL file; the first bad line or repeated id raises DataError."""
    return (record for _, record in iter_records(path))


def load_records(path: str | Path) -> list[Record]:
    """Read a whole preprocessed JSONL file into a list."""
    return list(read_records(path))


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    """True when decoding with surrogateescape met bytes that are not UTF-8."""
    return _SURROGATE.search(text) is not None
