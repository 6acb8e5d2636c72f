"""The API response cache: shared across output folders, never stores failures, safe for concurrent writers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dataset.predictions import read_rows
from inference.infer import main
from inference.response_cache import ResponseCache, request_key
from inference.stub_server import StubServer
from tests.helpers.api import api_argv

REPO = Path(__file__).resolve().parents[2]


def argv(vendor: str, rows: Path, out: Path, stub: StubServer, *extra: str) -> list[str]:
    return api_argv(vendor, rows, out, stub.base_url, "--max-retries", "0", *extra)


def test_key_covers_every_setting():
    base = ("openai", "m", "http://x/v1", [{"role": "user", "content": "p"}], {"temperature": 0.6}, 7, 0)
    keys = {request_key(*base)}
    for i, other in enumerate(["anthropic", "m2", "http://y/v1", [{"role": "user", "content": "q"}], {}, 8, 1]):
        keys.add(request_key(*base[:i], other, *base[i + 1 :]))
    assert len(keys) == 8


def test_rerun_into_a_new_folder_sends_nothing(wordnet_rows, tmp_path, monkeypatch):
    """Identical requests in a new folder come from the cache: the stub sees 0 requests; predictions match."""
    monkeypatch.setenv("STUB_KEY", "k")
    n = len(wordnet_rows.read_text().splitlines())
    cache = tmp_path / "cache"
    with StubServer("openai") as stub:
        common = ("--api-cache-dir", str(cache), "--n-samples", "2", "--selection", "oracle")
        assert main(argv("openai", wordnet_rows, tmp_path / "a", stub, *common)) == 0
        assert len(stub.requests) == 2 * n
        # Best-of-N: the sample index is in the key, so the N samples are N requests.
        seeds = {(json.dumps(r["body"]["messages"]), r["body"]["seed"]) for r in stub.requests}
        assert len(seeds) == 2 * n
        assert main(argv("openai", wordnet_rows, tmp_path / "b", stub, *common)) == 0
        assert len(stub.requests) == 2 * n  # nothing sent for the second folder
        summary = json.loads((tmp_path / "b" / "summary.json").read_text())
        assert summary["api_cache_hits"] == 2 * n and summary["api_requests_sent"] == 0
        first = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert first["api_cache_hits"] == 0 and first["api_requests_sent"] == 2 * n
        a, b = (read_rows(tmp_path / d / "predictions.jsonl")[0] for d in "ab")
        assert [(r["id"], r["prediction"], r["sample_idx"]) for r in a] == [
            (r["id"], r["prediction"], r["sample_idx"]) for r in b
        ]
        # --no-api-cache asks again; another seed is another request.
        assert main(argv("openai", wordnet_rows, tmp_path / "c", stub, *common, "--no-api-cache")) == 0
        assert len(stub.requests) == 4 * n
        assert main(argv("openai", wordnet_rows, tmp_path / "d", stub, *common, "--seed", "7")) == 0
        assert len(stub.requests) == 6 * n


def test_failures_are_never_cached(wordnet_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "k")
    rows = [json.loads(line) for line in wordnet_rows.read_text().splitlines()]
    cache = tmp_path / "cache"
    with StubServer("anthropic", fail_on=rows[2]["context"]) as stub:
        assert main(argv("anthropic", wordnet_rows, tmp_path / "a", stub, "--api-cache-dir", str(cache))) == 0
        assert len(ResponseCache(cache)) == len(rows) - 1
        stub.fail_on = None
        assert main(argv("anthropic", wordnet_rows, tmp_path / "b", stub, "--api-cache-dir", str(cache))) == 0
    assert len(stub.requests) == len(rows) + 1  # only the failed one was asked again
    assert rows[2]["context"] in json.dumps(stub.requests[-1]["body"])
    preds = read_rows(tmp_path / "b" / "predictions.jsonl")[0]
    assert all(p["error"] is None for p in preds)


WRITER = """
import sys
from inference.response_cache import ResponseCache
cache = ResponseCache(sys.argv[1])
for i in range(400):
    cache.put(f"{sys.argv[2]}-{i}", "openai", "m", "answer " * 20)
    assert cache.get(f"{sys.argv[2]}-{i}") is not None
"""


def test_two_processes_write_at_once(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name], cwd=REPO, stderr=subprocess.PIPE)
        for name in ("p", "q")
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    cache = ResponseCache(tmp_path)
    assert len(cache) == 800
    assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


OPENER = """
import sys
from inference.response_cache import ResponseCache
ResponseCache(sys.argv[1]).put("k" + sys.argv[2], "openai", "m", "answer")
"""


def test_runs_that_open_a_new_cache_together_all_get_it(tmp_path):
    # the switch to WAL takes an exclusive lock that SQLite refuses at once to a second opener (no busy wait)
    for round_ in range(10):
        folder = tmp_path / str(round_)
        procs = [
            subprocess.Popen([sys.executable, "-c", OPENER, str(folder), str(i)], cwd=REPO, stderr=subprocess.PIPE)
            for i in range(6)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        assert len(ResponseCache(folder)) == 6
