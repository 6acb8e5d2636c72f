"""A local SQLite cache of API answers, shared by every output folder and script: pay once per request.

Keyed by (vendor, model, base URL, full message list, sampling settings sent, seed, sample index): the
sample index keeps Best-of-N's N requests N distinct answers. Only answers are stored, never failures.
WAL journal with a busy timeout, one connection (so one writer) per process: concurrent runs are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

FILE = "responses.sqlite"
BUSY_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """`$LMLEXICON_API_CACHE`, else `<asset cache>/api-responses` (the toolkit's `.cache/` or `$LMLEXICON_CACHE`)."""
    from run_config.assets import cache_dir

    return Path(os.environ.get("LMLEXICON_API_CACHE") or cache_dir() / "api-responses")


def request_key(
    vendor: str,
    model: str,
    base_url: str | None,
    messages: list[dict[str, str]],
    sampling: dict[str, Any],
    seed: int,
    sample_idx: int,
) -> str:
    """The SHA-256 of the canonical JSON of everything that decides the answer."""
    blob = json.dumps(
        {
            "vendor": vendor,
            "model": model,
            "base_url": base_url or "",
            "messages": messages,
            "sampling": sampling,
            "seed": seed,
            "sample_idx": sample_idx,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch `db` to the WAL journal. The switch takes an exclusive lock and SQLite reports a concurrent one
    at once ("database is locked", no busy wait), as when two runs open a new cache together: retry it
    until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


class ResponseCache:
    """Answers by request key in `<folder>/responses.sqlite`."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(self._db)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, vendor TEXT, model TEXT, text TEXT, "
            "created REAL)"
        )

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT text FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, vendor: str, model: str, text: str) -> None:
        """Store one answer (the first one stored for a key wins)."""
        self._db.execute(
            "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?)", (key, vendor, model, text, time.time())
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
