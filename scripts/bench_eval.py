"""Benchmark evaluation: BLEU + ROUGE-L under the `max` protocol on the 15,375 Urban test definitions.

Predictions are a fixed shuffle (seed 0) of the references themselves; the references of each
prediction are all definitions of its term. Side by side in one process (imports done before timing):
  baseline: a plain loop over `sacrebleu.sentence_bleu(pred, [ref])` and `RougeScorer.score(ref, pred)`
            for every (prediction, reference) pair, max over references;
  ours:     `evaluation.api.score` with the same settings (sacrebleu 13a tokens + exp smoothing),
            which must give identical per-example scores, and again with the paper's Moses BLEU.
Prints the times and ends with `ratio=<baseline / ours> goal=5`.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sacrebleu  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402

from dataset.preprocess import main as preprocess_main  # noqa: E402
from dataset.records import load_records  # noqa: E402
from evaluation.api import score, score_records  # noqa: E402
from evaluation.config import MetricSettings  # noqa: E402
from evaluation.protocols import PROTOCOLS, reference_lists  # noqa: E402

GOAL = 5
URBAN = ROOT.parent / "shared" / "data" / "3d-ex" / "Urban_test.csv"


def baseline(preds: list[str], refs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """The plain loop: one sacrebleu / rouge_score call per (prediction, reference) pair."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    bleu, rouge = [], []
    for pred, rs in zip(preds, refs):
        bleu.append(max(sacrebleu.sentence_bleu(pred, [r]).score for r in rs))
        rouge.append(max(scorer.score(r, pred)["rougeL"].fmeasure for r in rs) * 100.0)
    return np.asarray(bleu), np.asarray(rouge)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(URBAN), help="Urban_test.csv of 3D-EX")
    parser.add_argument("--workers", type=int, default=0, help="processes for ours (0: one per core)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if preprocess_main(["--input", args.input, "--output-dir", tmp]) != 0:
            return 1
        records = load_records(Path(tmp) / "all.jsonl")
    preds = [r.definition for r in records]
    random.Random(0).shuffle(preds)
    refs = reference_lists(records, records, PROTOCOLS["max"])
    print(f"{len(records)} predictions, {sum(map(len, refs))} (prediction, reference) pairs")

    t0 = time.perf_counter()
    base_bleu, base_rouge = baseline(preds, refs)
    t_base = time.perf_counter() - t0

    same = MetricSettings(bleu_tokenize="13a", bleu_smooth="exp", workers=args.workers)
    t0 = time.perf_counter()
    ours = score_records(preds, records, ("bleu", "rouge"), "max", settings=same, workers=args.workers)
    t_ours = time.perf_counter() - t0
    per = ours.per_example()
    identical = np.array_equal(per["bleu"], base_bleu) and np.array_equal(per["rougeL"], base_rouge)

    t0 = time.perf_counter()
    paper = score(preds, records, ("bleu", "rouge"), "max", workers=args.workers)
    t_paper = time.perf_counter() - t0

    print(f"baseline loop (sacrebleu.sentence_bleu + rouge_score): {t_base:.2f} s  "
          f"BLEU {base_bleu.mean():.4f}  ROUGE-L {base_rouge.mean():.4f}")
    print(f"ours, same settings (13a, exp):                       {t_ours:.2f} s  "
          f"BLEU {per['bleu'].mean():.4f}  ROUGE-L {per['rougeL'].mean():.4f}  identical per example: {identical}")
    print(f"ours, paper settings (Moses BLEU+1):                  {t_paper:.2f} s  "
          f"BLEU {paper['bleu']:.4f}  ROUGE-L {paper['rougeL']:.4f}")
    if not identical:
        print("ERROR: scores differ from the baseline where the settings coincide")
        return 1
    print(f"ratio={t_base / t_ours:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
