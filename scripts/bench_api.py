"""Benchmark: `infer` against an OpenAI-format stub with 200 ms latency, concurrency 16 vs sequential, one run.

Runs the whole stage (real `openai` SDK client, retries, parsing, resumable JSONL) on the first N rows of
the embedded WordNet test split. Goal: 1,000 requests in <= 15 s at concurrency 16, >= 12x the
sequential run. Ends with `ratio=<x> goal=<y>`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataset.lexicon import wordnet_lexicon_dir
from inference.infer import main as infer_main


def timed_run(rows: Path, out: Path, concurrency: int, latency_s: float) -> float:
    """One full `infer` run against a stub served by another process (like a remote API)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "inference.stub_server", "openai", "--latency-s", str(latency_s)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
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
            ]
        )
        elapsed = time.perf_counter() - began
    finally:
        server.send_signal(signal.SIGINT)
        server.wait()
    summary = json.loads((out / "summary.json").read_text())
    if code != 0 or summary["generated"] != sum(1 for _ in rows.open()):
        raise SystemExit(f"bench run failed (exit {code}, summary {summary})")
    return elapsed


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
        timed_run(warmup, Path(tmp) / "warmup", args.concurrency, args.latency_s)
        concurrent = timed_run(rows, Path(tmp) / "concurrent", args.concurrency, args.latency_s)
        sequential = timed_run(rows, Path(tmp) / "sequential", 1, args.latency_s)
    print(f"{args.requests} requests, stub latency {args.latency_s * 1000:.0f} ms")
    print(f"concurrency {args.concurrency}: {concurrent:.2f} s ({args.requests / concurrent:.1f} req/s)")
    print(f"sequential:     {sequential:.2f} s ({args.requests / sequential:.1f} req/s)")
    print(
        f"ratio={sequential / concurrent:.2f} goal=12 (and concurrent <= 15 s: {'yes' if concurrent <= 15 else 'no'})"
    )


if __name__ == "__main__":
    main()
