"""Evaluate stage: score predictions JSONL files against the evaluation split under a named protocol.

Writes `scores.json` (one number per metric on 0-100, NIST in its own units; per system: mean and
std over seeds, Best-of-N oracle, seeded bootstrap 95% CIs under `ci95`; each metric's one-line
signature under `signatures`; counts of missing ids and empty predictions; with `--group-by KEY` the
same per group under `groups[KEY][label]`, evaluation.groups), `per_example.jsonl` (one row per
sample), `table.{md,csv,tex}` (Table-2 layout), `table_KEY.{md,csv,tex}` per group key, `significance.json` with
`--compare-to` (every predictions file against that baseline, Holm-corrected), and `manifest.json`
last. A rerun with the same config and inputs skips the work.
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
from evaluation.groups import GroupContext, group_rows
from evaluation.metrics import NEURAL_METRICS, Metric
from evaluation.predictions import Prediction, Run, group_runs, read_predictions
from evaluation.protocols import Protocol, get_protocol, reference_lists
from evaluation.report import LABELS, Table, mean_std, table2
from evaluation.scoring import SampleScores, score_samples, summarize
from evaluation.signatures import signature
from evaluation.significance import TESTS, bootstrap_ci, compare_many, corpus_bootstrap_ci
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


def read_files(cfg: EvaluateConfig, by_id: dict[str, Record]) -> list[tuple[str, list[Prediction], list[Run], dict]]:
    """(path, rows, runs, counts) of every predictions file; a system (model name) belongs to one file only."""
    out, owner = [], {}
    for path in cfg.predictions:
        rows = read_predictions(existing_file(path))
        runs, counts = group_runs(rows, by_id, path, cfg.references, cfg.require_all)
        for run in runs:
            if owner.setdefault(run.model, path) != path:
                raise DataError(path, None, "model", f"system {run.model!r} is also in {owner[run.model]} (rename one)")
        out.append((path, rows, runs, counts))
    return out


def merged_counts(per_file: list[dict]) -> dict:
    """The counts of one file, or their sums (runs listed together) over several."""
    if len(per_file) == 1:
        return per_file[0]
    sums = {k: sum(c[k] for c in per_file) for k in ("predictions", "empty_predictions", "failed_predictions")}
    return {
        **sums,
        "references": per_file[0]["references"],
        "files": len(per_file),
        "runs": [r for c in per_file for r in c["runs"]],
    }


def score_runs(
    runs: list[Run], records: list[Record], metrics: list[Metric], protocol: Protocol, workers: int
) -> list[tuple[Run, SampleScores]]:
    """Score every run (model, seed) of a predictions file."""
    by_id = {r.id: r for r in records}
    out = []
    for run in runs:
        refs = reference_lists([by_id[i] for i in run.ids], records, protocol)
        log.info("scoring %s seed %s: %d ids", run.model, run.seed, len(run.ids))
        terms = [by_id[i].term for i in run.ids]
        out.append((run, score_samples(run.texts(), refs, metrics, protocol, workers, terms)))
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


def confidence_intervals(
    scored: list[tuple[Run, SampleScores]], metrics: list[Metric], samples: int, seed: int
) -> dict:
    """system -> metric -> [low, high]: percentile bootstrap 95% CI over reference ids, of the mean of each id's
    score (mean over the system's seeds and samples), or of a corpus metric with sufficient statistics
    (sacrebleu; MAUVE has none) averaged over seeds."""
    by_system: dict[str, list[tuple[Run, SampleScores]]] = {}
    for run, scores in scored:
        by_system.setdefault(run.model, []).append((run, scores))
    finish = {m.name: m.from_statistics for m in metrics if not m.per_example}
    out = {}
    for system, runs in by_system.items():
        out[system] = {
            m: bootstrap_ci(np.fromiter(v.values(), float), samples, seed) for m, v in id_scores(runs).items()
        }
        for name in finish:
            stats = [scores.corpus_stats.get(name) for _, scores in runs]
            if stats and all(s is not None for s in stats):
                out[system][name] = corpus_bootstrap_ci(stats, finish[name], samples, seed)
    return out


def significance_tests(
    cfg: EvaluateConfig,
    files: list[tuple[str, list[tuple[Run, SampleScores]]]],
    records: list[Record],
    metrics: list[Metric],
    protocol: Protocol,
) -> dict:
    """Every predictions file against the `compare_to` baseline (p_holm: Holm over the files)."""
    by_id = {r.id: r for r in records}
    base_runs, base_counts = group_runs(
        read_predictions(existing_file(cfg.compare_to)), by_id, cfg.compare_to, cfg.references, cfg.require_all
    )
    baseline = id_scores(score_runs(base_runs, records, metrics, protocol, cfg.workers))
    tests = compare_many(
        {path: id_scores(scored) for path, scored in files}, baseline, cfg.bootstrap_samples, cfg.seed, cfg.compare_to
    )
    out: dict = {"b": cfg.compare_to, "b_counts": base_counts, "holm_family": len(files)}
    if len(files) == 1:
        out.update(a=files[0][0], metrics=tests[files[0][0]])
    out["comparisons"] = {path: {"metrics": per} for path, per in tests.items()}
    return out


def score_groups(
    files: list[tuple[str, list[Prediction]]],
    key: str,
    context: GroupContext,
    metrics: list[Metric],
    protocol: Protocol,
    cfg: EvaluateConfig,
) -> dict[str, dict]:
    """label -> its rows' counts, per-system scores (mean and std over seeds) and CIs, each group scored as a
    file of its own (references still drawn from the whole evaluation split)."""
    records = list(context.records.values())
    labelled: dict[str, list[tuple[str, list[Prediction]]]] = {}
    for path, rows in files:
        for label, members in group_rows(rows, key, context).items():
            labelled.setdefault(label, []).append((path, members))
    order = list(group_rows([p for _, rows in files for p in rows], key, context))
    out = {}
    for label in order:
        scored = []
        for path, members in labelled[label]:
            runs, _ = group_runs(members, context.records, path, cfg.references)
            scored += score_runs(runs, records, metrics, protocol, cfg.workers)
        systems = aggregate(scored, protocol)
        members = [p for _, ms in labelled[label] for p in ms]
        out[label] = {
            "predictions": len(members),
            "ids": len({p.id for p in members}),
            "systems": {name: {"mean": info["mean"], "std": info["std"]} for name, info in systems.items()},
            "ci95": confidence_intervals(scored, metrics, cfg.bootstrap_samples, cfg.seed),
        }
    return out


def group_table(key: str, groups: dict[str, dict], metrics: list[str]) -> Table:
    """One row per (group, system): rows scored, then each metric's mean (± std over seeds)."""
    header = [key, "Method", "n", *(LABELS.get(m, m) for m in metrics)]
    rows = []
    for label, info in groups.items():
        for system, scores in info["systems"].items():
            mean, std = scores["mean"], scores["std"]
            cells = [f"{mean[m]:.2f}" + (f"±{std[m]:.2f}" if std[m] else "") for m in metrics]
            rows.append([label, system, str(info["predictions"]), *cells])
    return Table(header, rows)


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
    per_file = read_files(cfg, by_id)
    counts = merged_counts([c for *_, c in per_file])
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
    by_file = [(path, score_runs(runs, records, metrics, protocol, cfg.workers)) for path, _, runs, _ in per_file]
    scored = [item for _, items in by_file for item in items]
    systems = aggregate(scored, protocol)
    intervals = confidence_intervals(scored, metrics, cfg.bootstrap_samples, cfg.seed)
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
            "signatures": {m.name: signature(m, protocol) for m in metrics},
            "ci95": {
                "bootstrap_samples": cfg.bootstrap_samples,
                "seed": cfg.seed,
                "unit": "reference id",
                "systems": intervals,
            },
        }
    )
    if cfg.group_by:
        train = load_records(existing_file(cfg.train_references)) if cfg.train_references else None
        context = GroupContext.build(records, train)
        rows = [(path, preds) for path, preds, _, _ in per_file]
        result["groups"] = {key: score_groups(rows, key, context, metrics, protocol, cfg) for key in cfg.group_by}
    significance = significance_tests(cfg, by_file, records, metrics, protocol) if cfg.compare_to else None
    per_metric = [m.name for m in metrics]
    table = table2(
        {name: {dataset: [r["scores"] for r in info["seeds"]]} for name, info in systems.items()}, [dataset], per_metric
    )
    group_tables = {key: group_table(key, groups, per_metric) for key, groups in result.get("groups", {}).items()}
    out = Path(cfg.output_dir)
    with AtomicFileSet() as files:
        files.get(out / "scores.json").write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        rows = files.get(out / "per_example.jsonl")
        for line in per_example_rows(scored, by_id):
            rows.write(line)
        table.write(out, "table", files)
        for key, group_tab in group_tables.items():
            group_tab.write(out, f"table_{key}", files)
        if significance is not None:
            files.get(out / "significance.json").write(json.dumps(significance, indent=2) + "\n")
    write_manifest(out, "evaluate", cfg, inputs=inputs_fingerprint(cfg))
    return {
        **result,
        "table": table.markdown(),
        "group_tables": {key: t.markdown() for key, t in group_tables.items()},
        "significance": significance,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("evaluate", __doc__, EvaluateConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, EvaluateConfig)
    if skip_finished("evaluate", cfg, is_up_to_date):
        return 0
    result = evaluate(cfg)
    print(result["table"], end="")
    for key, markdown in result["group_tables"].items():
        print(f"\nby {key}:\n{markdown}", end="")
    for path, comparison in (result["significance"] or {}).get("comparisons", {}).items():
        for metric, test in comparison["metrics"].items():
            p_values = "  ".join(
                f"{name} p={test[name]['p_value']:.4g} (Holm {test[name]['p_holm']:.4g})" for name in TESTS
            )
            print(f"{Path(path).name} {metric}: delta {test['bootstrap']['delta']:+.2f}  {p_values}  (n={test['n']})")
    print(f"evaluate: scores -> {Path(cfg.output_dir) / 'scores.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
