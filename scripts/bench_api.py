"""Benchmark: `infer` against an OpenAI-format stub with 200 ms latency, concurrency 16 vs sequential, one run.

Runs the whole stage (real `openai` SDK client, retries, parsing, resumable JSONL) on the first N rows of
the embedded WordNet test split. Goal: 1,000 requests in <= 15 s at concurrency 16, >= 12x the
sequential run; a rerun of the same requests into a new folder sends none (`cached_rerun_requests=0`,
the response cache). Ends with `ratio=<x> goal=<y>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dataset.lexicon import wordnet_lexicon_dir
from inference.infer import main as infer_main


@contextlib.contextmanager
def stub(latency_s: float) -> Iterator[str]:
    """An OpenAI-format stub served by another process (like a remote API); yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "inference.stub_server", "openai", "--latency-s", str(latency_s)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield server.stdout.readline().strip()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait()


def timed_run(rows: Path, out: Path, base_url: str, concurrency: int, cache: Path) -> tuple[float, dict]:
    """One full `infer` run; returns its wall time and summary."""
    began = time.perf_counter()
    code = infer_main(
        [
            "--backend",
            "openai",
            "--model",
            "stub",
            "--input",
            str(rows),
            "--output-dir",
            str(out),
            "--base-url",
            base_url,
            "--concurrency",
            str(concurrency),
            "--api-cache-dir",
            str(cache),
        ]
    )
    elapsed = time.perf_counter() - began
    summary = json.loads((out / "summary.json").read_text())
    if code != 0 or summary["predictions"] != sum(1 for _ in rows.open()) or summary["failed_predictions"]:
        raise SystemExit(f"bench run failed (exit {code}, summary {summary})")
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency-s", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.jsonl"
        with open(wordnet_lexicon_dir() / "test.jsonl", encoding="utf-8") as f:
            rows.write_text("".join(next(f) for _ in range(args.requests)), encoding="utf-8")
        warmup = Path(tmp) / "warmup.jsonl"  # one-time imports (SDK, torch) stay out of both timings
        warmup.write_text("".join(rows.read_text(encoding="utf-8").splitlines(keepends=True)[:16]), encoding="utf-8")
        with stub(args.latency_s) as url:
            timed_run(warmup, Path(tmp) / "warmup", url, args.concurrency, Path(tmp) / "cache-warmup")
        with stub(args.latency_s) as url:
            concurrent, _ = timed_run(rows, Path(tmp) / "concurrent", url, args.concurrency, Path(tmp) / "cache")
            # The same requests into a new folder: every answer comes from the response cache.
            rerun, summary = timed_run(rows, Path(tmp) / "rerun", url, args.concurrency, Path(tmp) / "cache")
        with stub(args.latency_s) as url:
            sequential, _ = timed_run(rows, Path(tmp) / "sequential", url, 1, Path(tmp) / "cache-sequential")
    print(f"{args.requests} requests, stub latency {args.latency_s * 1000:.0f} ms")
    print(f"concurrency {args.concurrency}: {concurrent:.2f} s ({args.requests / concurrent:.1f} req/s)")
    print(f"sequential:     {sequential:.2f} s ({args.requests / sequential:.1f} req/s)")
    print(f"rerun into a new folder: {rerun:.2f} s, {summary['api_cache_hits']} cache hits")
    print(f"cached_rerun_requests={summary['api_requests_sent']} goal=0")
    print(
        f"ratio={sequential / concurrent:.2f} goal=12 (and concurrent <= 15 s: {'yes' if concurrent <= 15 else 'no'})"
    )


if __name__ == "__main__":
    main()
