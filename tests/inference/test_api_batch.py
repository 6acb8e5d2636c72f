"""--api-batch: the vendors' real SDKs against local stubs speaking their batch wire formats (OpenAI Batch with
a JSONL upload, Anthropic Message Batches, Gemini batch mode): error rows, retries, cache, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset.predictions import read_rows
from inference.api_batch import LEDGER, BatchLedger, split_batches
from inference.infer import main
from inference.stub_server import StubServer
from tests.helpers.api import api_argv

REPO = Path(__file__).resolve().parents[2]
VENDORS = ["openai", "anthropic", "gemini"]


def argv(vendor: str, rows: Path, out: Path, base_url: str, cache: Path, *extra: str) -> list[str]:
    return api_argv(
        vendor,
        rows,
        out,
        base_url,
        "--api-cache-dir",
        str(cache),
        "--api-batch",
        "--api-batch-poll-s",
        "0.05",
        "--max-retries",
        "1",
        "--retry-base-delay-s",
        "0.01",
        *extra,
    )


@pytest.mark.parametrize("vendor", VENDORS)
def test_batch_answers_errors_retry_and_cache(vendor, wordnet_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "k")
    rows = [json.loads(line) for line in wordnet_rows.read_text().splitlines()]
    n, failing, expiring = len(rows), rows[3], rows[5]
    cache, out = tmp_path / "cache", tmp_path / "out"
    with StubServer(vendor, batch_s=0.1, fail_on=failing["context"], expire_on=expiring["context"]) as stub:
        assert main(argv(vendor, wordnet_rows, out, stub.base_url, cache, "--api-batch-size", "10")) == 0
        assert stub.requests == []  # everything went through the batch endpoints
        assert len(stub.batches.created) == 3 and stub.batches.items == n
        items = [body for batch in stub.batches.batches.values() for _, body in batch["items"]]
        if vendor == "openai":  # a batch line carries the same body as an ordinary request
            assert items[0]["messages"][0]["role"] == "system" and isinstance(items[0]["seed"], int)
        if vendor == "anthropic":
            assert items[0]["system"] and items[0]["max_tokens"] == 64
        if vendor == "gemini":
            assert items[0]["systemInstruction"] and items[0]["generationConfig"]["seed"] >= 0
        preds = {r["id"]: r for r in read_rows(out / "predictions.jsonl")[0]}
        assert len(preds) == n
        assert preds[rows[0]["id"]]["prediction"] == f"a definition of {rows[0]['term']}"
        assert preds[failing["id"]]["prediction"] is None and preds[failing["id"]]["error"].startswith("BatchError")
        assert preds[expiring["id"]]["error"].startswith("BatchError")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["api_batches_submitted"] == 3 and summary["api_requests_sent"] == n
        assert summary["api_batch_failed_items"] == 2 and summary["failed_predictions"] == 2

        # Rerun: the two failed rows go into a new batch; the expired one is retried as an ordinary request.
        stub.fail_on = stub.batches.fail_on = None
        assert main(argv(vendor, wordnet_rows, out, stub.base_url, cache, "--api-batch-retry")) == 0
        assert len(stub.batches.created) == 4 and stub.batches.items == n + 2
        assert len(stub.requests) == 1 and expiring["context"] in json.dumps(stub.requests[0]["body"])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["api_batch_retried"] == 1 and summary["failed_predictions"] == 0
        assert all(r["error"] is None for r in read_rows(out / "predictions.jsonl")[0])

        # Into a new folder: every answer is in the response cache, nothing is submitted.
        assert main(argv(vendor, wordnet_rows, tmp_path / "again", stub.base_url, cache)) == 0
        assert len(stub.batches.created) == 4 and len(stub.requests) == 1
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["api_cache_hits"] == n


@pytest.mark.parametrize("vendor", VENDORS)
def test_batch_kill_and_resume(vendor, wordnet_rows, tmp_path, monkeypatch, capsys):
    """SIGKILL while batches run: the first batch's rows are already written; the rerun submits nothing new,
    picks up the open batch ids from the ledger and writes every row exactly once."""
    monkeypatch.setenv("STUB_KEY", "k")
    n = len(wordnet_rows.read_text().splitlines())
    out, samples = tmp_path / "out", tmp_path / "out" / "samples.jsonl"
    env = {**os.environ, "STUB_KEY": "k", "PYTHONPATH": str(REPO)}
    with StubServer(vendor, batch_s=2.0) as stub:  # batch k ends 2k s after its creation
        args = argv(vendor, wordnet_rows, out, stub.base_url, tmp_path / "cache", "--api-batch-size", "8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference.infer", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not samples.is_file() or len(samples.read_text().splitlines()) < 8):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(stub.batches.created) == 3
        written = len(read_rows(samples)[0])
        assert 8 <= written < n  # partial results: the first batch's rows, the others still running
        open_batches = BatchLedger(out).open_batches(vendor)
        assert len(open_batches) == 3 - written // 8
        # A dry run now: nothing to send, the open batches' requests awaited (not counted as new requests).
        capsys.readouterr()
        assert main(args + ["--dry-run"]) == 0 and len(stub.batches.created) == 3
        awaited = sum(len(keys) for keys in open_batches.values())
        line = capsys.readouterr().out
        assert f"0 requests to send ({n - written} samples to generate, 0 cache hits, {written} samples done, " in line
        assert f"{awaited} awaited from open batches" in line
        assert main(args) == 0
        assert len(stub.batches.created) == 3 and stub.requests == []  # nothing resubmitted
        summary = json.loads((out / "summary.json").read_text())
        assert summary["api_batches_resumed"] == 3 - written // 8 and summary["api_batches_submitted"] == 0
        rows, cut = read_rows(samples)
        keys = [(r["id"], r["sample_idx"]) for r in rows]
        assert not cut and len(keys) == len(set(keys)) == n and all(r["error"] is None for r in rows)
        assert BatchLedger(out).open_batches(vendor) == {}
        # --force starts over, the ledger included (the answers come from the cache: nothing to submit).
        assert main(args + ["--force"]) == 0 and not (out / LEDGER).exists()


def test_batch_is_refused_for_local_models(wordnet_rows, tmp_path):
    base = ["--backend", "local", "--model", "m", "--input", str(wordnet_rows), "--output-dir", str(tmp_path)]
    assert main(base + ["--api-batch"]) == 2


def test_batches_split_by_count_and_size():
    assert split_batches([1] * 7, 3, 100) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert split_batches([40, 40, 40, 150, 10], 10, 100) == [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 5)]
    assert split_batches([], 3, 100) == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_expired_batch_is_error_rows_then_resubmitted(vendor, wordnet_rows, tmp_path, monkeypatch, capsys):
    """A whole batch expires (no answer): every row is a counted error row and the run exits 1; the rerun
    submits those requests again."""
    monkeypatch.setenv("STUB_KEY", "k")
    n = len(wordnet_rows.read_text().splitlines())
    out = tmp_path / "out"
    with StubServer(vendor, batch_s=0.1) as stub:
        stub.batches.expire_batches = True
        args = argv(vendor, wordnet_rows, out, stub.base_url, tmp_path / "cache")
        assert main(args) == 1
        assert "every one of the 24 inputs failed" in capsys.readouterr().err
        rows = read_rows(out / "samples.jsonl")[0]
        assert len(rows) == n and all(r["prediction"] is None and r["error"].startswith("BatchError") for r in rows)
        if vendor == "gemini":  # the batch ended without output: the reason names its state
            assert "ended JOB_STATE_EXPIRED without this request's result" in rows[0]["error"]
        stub.batches.expire_batches = False
        assert main(args) == 0
        assert len(stub.batches.created) == 2 and stub.batches.items == 2 * n
    assert all(r["error"] is None for r in read_rows(out / "predictions.jsonl")[0])


def test_ledger_survives_a_cut_off_line(tmp_path):
    ledger = BatchLedger(tmp_path)
    ledger.submitted("openai", "batch_1", ["a", "b"])
    with open(ledger.path, "a", encoding="utf-8") as f:
        f.write('{"event": "submitted", "vendor": "openai", "batch_id": "ba')  # killed mid-write
    ledger.submitted("openai", "batch_2", ["c"])
    ledger.submitted("anthropic", "msgbatch_1", ["d"])
    ledger.collected("openai", "batch_1")
    assert ledger.open_batches("openai") == {"batch_2": ["c"]}
    assert ledger.open_batches("anthropic") == {"msgbatch_1": ["d"]}
