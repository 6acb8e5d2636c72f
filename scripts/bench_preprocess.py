"""Benchmark the preprocess stage on a synthetic 3D-EX-shaped CSV: rows/s and peak RSS.

Runs the real CLI in a child process on 100k and 1M rows (same generator), so the two runs sit side
by side: throughput is compared with the goal (full 3D-EX, ~1.3M rows, in under 120 s here) and the
peak RSS of the 1M run with that of the 100k run (flat memory: ratio ~1).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_ROWS, GOAL_SECONDS = 1_300_000, 120.0
SOURCES = ["WordNet", "Oxford", "Wikipedia", "Urban", "Wiktionary", "CHA", "Sci-definition"]
WORDS = "the a of to bank river dog bark run light heavy quick slow money water stone tree house".split()


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Write a 3D-EX-shaped CSV: quoted commas, doubled quotes, list-of-lists examples, 3 splits."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("WORD,DEFINITION,EXAMPLE,DATASET_NAME,SPLIT_TYPE\n")
        for i in range(rows):
            term = f"{rng.choice(WORDS)}{i % 50000}"
            definition = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
            ctx = " ".join(rng.choices(WORDS, k=rng.randint(6, 20))).replace(" ", f" {term} ", 1)
            split = rng.choice(("train", "train", "train", "valid", "test"))
            if i % 4 == 0:
                example = f"\"[['{ctx}', '{ctx} again'], ['{ctx}, too']]\""
                source = f'"[""[\'{rng.choice(SOURCES)}\']"", ""[\'{rng.choice(SOURCES)}\']""]"'
            else:
                example = f'"{ctx}, said ""he"""'
                source = rng.choice(SOURCES)
            f.write(f'{term},"{definition}, roughly",{example},{source},{split}\n')


def run_once(csv_path: Path, out: Path) -> tuple[float, float]:
    """Run the preprocess CLI in a fresh child; return (seconds, child peak RSS in MiB)."""
    cmd = [
        sys.executable,
        "-c",
        "import resource,sys; from dataset.preprocess import main; rc=main(sys.argv[1:]); "
        "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
        "--input",
        str(csv_path),
        "--output-dir",
        str(out),
        "--force",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    rss_kib = int(next(l for l in proc.stdout.splitlines() if l.startswith("RSS")).split()[1])
    return seconds, rss_kib / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for rows in (args.rows // 10, args.rows):
            csv_path = tmp / f"synthetic_{rows}.csv"
            write_csv(csv_path, rows)
            seconds, rss = run_once(csv_path, tmp / f"out_{rows}")
            results[rows] = (seconds, rss)
            print(f"rows={rows} seconds={seconds:.1f} rows_per_s={rows / seconds:,.0f} peak_rss_mib={rss:.0f}")
            csv_path.unlink()
    small, big = results[args.rows // 10], results[args.rows]
    print(
        f"rss_ratio={big[1] / small[1]:.2f} (peak RSS at {args.rows:,} rows / at {args.rows // 10:,} rows; flat = ~1)"
    )
    need = GOAL_ROWS / GOAL_SECONDS
    print(
        f"# ratio = measured rows/s / rows/s needed for {GOAL_ROWS:,} rows in {GOAL_SECONDS:.0f} s"
        " (>= 1 meets the goal)"
    )
    print(f"ratio={args.rows / big[0] / need:.2f} goal=1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
