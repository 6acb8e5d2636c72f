"""Benchmark evaluation: BLEU + ROUGE-L under the `max` protocol on the 15,375 Urban test definitions.

Predictions are a fixed shuffle (seed 0) of the references themselves; the references of each
prediction are all definitions of its term. Side by side in one process (imports done before timing):
  baseline: a plain loop over `sacrebleu.sentence_bleu(pred, [ref])` and `RougeScorer.score(ref, pred)`
            for every (prediction, reference) pair, max over references;
  ours:     `evaluation.api.score` as the evaluate stage runs it (Moses BLEU + ROUGE-L, `max`);
  check:    ours with sacrebleu's settings (13a tokens, exp smoothing) must give the baseline's
            per-example scores exactly.
Both are run `--repeat` times, alternating, and the fastest run of each counts (other jobs share the
cores: the load average is printed). Prints wall and CPU seconds (CPU includes worker processes) and
ends with `ratio=<baseline wall / ours wall> goal=5`.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

from dataset.preprocess import main as preprocess_main
from dataset.records import load_records
from evaluation.api import score, score_records
from evaluation.metrics.settings import MetricSettings
from evaluation.protocols import PROTOCOLS, reference_lists
from scripts.bench_data import add_urban_option, urban_csv

GOAL = 5


def baseline(preds: list[str], refs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """The plain loop: one sacrebleu / rouge_score call per (prediction, reference) pair."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    bleu, rouge = [], []
    for pred, rs in zip(preds, refs):
        bleu.append(max(sacrebleu.sentence_bleu(pred, [r]).score for r in rs))
        rouge.append(max(scorer.score(r, pred)["rougeL"].fmeasure for r in rs) * 100.0)
    return np.asarray(bleu), np.asarray(rouge)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_urban_option(parser, "--input")
    parser.add_argument("--workers", type=int, default=0, help="processes for ours (0: one per core)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the fastest counts")
    args = parser.parse_args()
    args.input = str(urban_csv(parser, "--input", args.input))
    with tempfile.TemporaryDirectory() as tmp:
        if preprocess_main(["--input", args.input, "--output-dir", tmp]) != 0:
            return 1
        records = load_records(Path(tmp) / "all.jsonl")
    preds = [r.definition for r in records]
    random.Random(0).shuffle(preds)
    refs = reference_lists(records, records, PROTOCOLS["max"])
    print(f"{len(records)} predictions, {sum(map(len, refs))} (prediction, reference) pairs")

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    base_runs, our_runs = [], []
    for _ in range(args.repeat):
        base_runs.append(timed(baseline, preds, refs))
        our_runs.append(timed(score, preds, records, ("bleu", "rouge"), "max", workers=args.workers))
    (base_bleu, base_rouge), t_base, c_base = min(base_runs, key=lambda run: run[1])
    paper, t_ours, c_ours = min(our_runs, key=lambda run: run[1])
    same = MetricSettings(bleu_tokenize="13a", bleu_smooth="exp")
    check = score_records(preds, records, ("bleu", "rouge"), "max", settings=same, workers=args.workers)
    per = check.per_example()
    identical = np.array_equal(per["bleu"], base_bleu) and np.array_equal(per["rougeL"], base_rouge)
    print(f"fastest of {args.repeat} runs each")
    print(
        f"baseline loop (sacrebleu.sentence_bleu + rouge_score): wall {t_base:6.2f} s  CPU {c_base:6.2f} s  "
        f"sacreBLEU {base_bleu.mean():.4f}  ROUGE-L {base_rouge.mean():.4f}"
    )
    print(
        f"ours (Moses BLEU + ROUGE-L, max protocol):            wall {t_ours:6.2f} s  CPU {c_ours:6.2f} s  "
        f"BLEU {paper['bleu']:.4f}  ROUGE-L {paper['rougeL']:.4f}"
    )
    print(
        f"ours with sacrebleu's settings: sacreBLEU {per['bleu'].mean():.4f}  ROUGE-L {per['rougeL'].mean():.4f}  "
        f"identical to the baseline per example: {identical}"
    )
    if not identical:
        print("ERROR: scores differ from the baseline where the settings coincide")
        return 1
    print(f"CPU-time ratio {c_base / c_ours:.2f}; load average after: {os.getloadavg()[0]:.1f}")
    print(f"ratio={t_base / t_ours:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
