"""Evaluate stage: score a predictions JSONL against the evaluation split under a named protocol.

Writes `scores.json` (one number per metric on 0-100, NIST in its own units; per system: mean and
std over seeds, Best-of-N oracle; counts of missing ids and empty predictions), `per_example.jsonl`
(one row per sample), `table.{md,csv,tex}` (Table-2 layout), `significance.json` with
`--compare-to`, and `manifest.json` last. A rerun with the same config and inputs skips the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from dataset.records import Record, load_records
from evaluation.api import build_metrics
from evaluation.config import EvaluateConfig
from evaluation.metrics import NEURAL_METRICS, Metric
from evaluation.predictions import Run, group_runs, read_predictions
from evaluation.protocols import Protocol, get_protocol, reference_lists
from evaluation.report import mean_std, table2
from evaluation.scoring import SampleScores, score_samples, summarize
from evaluation.significance import compare
from run_config.cli import config_from_args, existing_file, run_main, skip_finished, stage_parser
from run_config.devices import resolve_device
from run_config.errors import DataError
from run_config.runtime import AtomicFileSet, inputs_fingerprint, is_finished, set_seed, write_manifest

log = logging.getLogger(__name__)


def load_references(path: str) -> list[Record]:
    """The evaluation split; ids must be unique."""
    records = load_records(existing_file(path))
    seen: Counter = Counter(r.id for r in records)
    dup = next((i for i, n in seen.items() if n > 1), None)
    if dup is not None:
        raise DataError(path, None, "id", f"duplicate reference id {dup!r} ({seen[dup]} records)")
    if not records:
        raise DataError(path, None, None, "no reference records")
    return records


def dataset_name(cfg: EvaluateConfig, records: list[Record]) -> str:
    sources = {r.source for r in records}
    return cfg.dataset or (sources.pop() if len(sources) == 1 else Path(cfg.references).stem)


def score_runs(
    runs: list[Run], records: list[Record], metrics: list[Metric], protocol: Protocol, workers: int
) -> list[tuple[Run, SampleScores]]:
    """Score every run (model, seed) of a predictions file."""
    by_id = {r.id: r for r in records}
    out = []
    for run in runs:
        refs = reference_lists([by_id[i] for i in run.ids], records, protocol)
        log.info("scoring %s seed %s: %d ids", run.model, run.seed, len(run.ids))
        out.append((run, score_samples(run.texts(), refs, metrics, protocol, workers)))
    return out


def aggregate(scored: list[tuple[Run, SampleScores]], protocol: Protocol) -> dict:
    """Per system: each seed's scores, their mean ± std, and the mean Best-of-N oracle."""
    systems: dict[str, dict] = {}
    for run, scores in scored:
        summary = summarize(scores, protocol)
        systems.setdefault(run.model, {"seeds": []})["seeds"].append({"seed": run.seed, **summary})
    for info in systems.values():
        runs = info["seeds"]
        stats = {k: mean_std([r["scores"][k] for r in runs]) for k in runs[0]["scores"]}
        info["mean"] = {k: protocol.finish(m) for k, (m, _) in stats.items()}
        info["std"] = {k: s for k, (_, s) in stats.items()}
        if "oracle" in runs[0]:
            info["oracle"] = {k: float(np.mean([r["oracle"][k] for r in runs])) for k in runs[0]["oracle"]}
    return systems


def id_scores(scored: list[tuple[Run, SampleScores]]) -> dict[str, dict[str, float]]:
    """metric -> id -> score averaged over the file's runs and samples (input of the significance tests)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for run, scores in scored:
        for metric, values in scores.per_example("mean").items():
            for i, v in zip(run.ids, values):
                sums.setdefault(metric, {}).setdefault(i, []).append(float(v))
    return {m: {i: float(np.mean(v)) for i, v in per.items()} for m, per in sums.items()}


def per_example_rows(scored: list[tuple[Run, SampleScores]], records: dict[str, Record]):
    """One JSON line per sample: ids, the prediction and its per-example scores."""
    for run, scores in scored:
        preds = [p for ps in run.ordered() for p in ps]
        for k, p in enumerate(preds):
            row = {
                "model": run.model,
                "seed": run.seed,
                "id": p.id,
                "sample_idx": p.sample_idx,
                "term": records[p.id].term,
                "prediction": p.prediction,
                "empty": bool(scores.empty[k]),
            }
            row.update({m: float(v[k]) for m, v in scores.per_sample.items()})
            yield json.dumps(row, ensure_ascii=False) + "\n"


def is_up_to_date(cfg: EvaluateConfig) -> bool:
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg), "scores.json")


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run the stage; return scores.json's content. Nothing is written when an input is bad."""
    if any(name in NEURAL_METRICS for name in cfg.metrics):
        resolve_device(cfg.device)  # a GPU this machine lacks is refused before any prediction is read
    set_seed(cfg.seed)
    records = load_references(cfg.references)
    by_id = {r.id: r for r in records}
    protocol = get_protocol(cfg.protocol)
    runs, counts = group_runs(
        read_predictions(existing_file(cfg.predictions)), by_id, cfg.predictions, cfg.references, cfg.require_all
    )
    for run in counts["runs"]:
        if run["missing_ids"]:
            log.warning(
                "%s seed %s: %d of %d reference ids have no prediction (counted, not scored)",
                run["model"],
                run["seed"],
                run["missing_ids"],
                len(records),
            )
    if counts["empty_predictions"]:
        log.warning("%d empty predictions (each scores 0 and is counted)", counts["empty_predictions"])
    metrics = build_metrics(cfg.metrics, cfg, protocol)
    scored = score_runs(runs, records, metrics, protocol, cfg.workers)
    systems = aggregate(scored, protocol)
    dataset = dataset_name(cfg, records)
    result: dict = {}
    if len(systems) == 1:
        (only,) = systems.values()
        result.update(only["mean"])
        if len(only["seeds"]) > 1:
            result["std"] = only["std"]
        if "oracle" in only:
            result["oracle"] = only["oracle"]
    result.update(
        {
            "protocol": cfg.protocol,
            "dataset": dataset,
            "counts": counts,
            "systems": systems,
            "settings": {m.name: m.signature() for m in metrics},
        }
    )
    significance = None
    if cfg.compare_to:
        other_runs, other_counts = group_runs(
            read_predictions(existing_file(cfg.compare_to)), by_id, cfg.compare_to, cfg.references, cfg.require_all
        )
        other = score_runs(other_runs, records, metrics, protocol, cfg.workers)
        significance = {
            "a": cfg.predictions,
            "b": cfg.compare_to,
            "b_counts": other_counts,
            "metrics": compare(id_scores(scored), id_scores(other), cfg.bootstrap_samples, cfg.seed, cfg.compare_to),
        }
    per_metric = [m.name for m in metrics]
    table = table2(
        {name: {dataset: [r["scores"] for r in info["seeds"]]} for name, info in systems.items()}, [dataset], per_metric
    )
    out = Path(cfg.output_dir)
    with AtomicFileSet() as files:
        files.get(out / "scores.json").write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        rows = files.get(out / "per_example.jsonl")
        for line in per_example_rows(scored, by_id):
            rows.write(line)
        table.write(out, "table", files)
        if significance is not None:
            files.get(out / "significance.json").write(json.dumps(significance, indent=2) + "\n")
    write_manifest(out, "evaluate", cfg, inputs=inputs_fingerprint(cfg))
    return {**result, "table": table.markdown(), "significance": significance}


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("evaluate", __doc__, EvaluateConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, EvaluateConfig)
    if skip_finished("evaluate", cfg, is_up_to_date):
        return 0
    result = evaluate(cfg)
    print(result["table"], end="")
    for metric, test in (result["significance"] or {}).get("metrics", {}).items():
        print(
            f"{metric}: delta {test['bootstrap']['delta']:+.2f}  bootstrap p={test['bootstrap']['p_value']:.4g}  "
            f"t-test p={test['ttest']['p_value']:.4g}  (n={test['n']})"
        )
    print(f"evaluate: scores -> {Path(cfg.output_dir) / 'scores.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
