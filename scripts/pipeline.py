"""End-to-end pipeline: preprocess -> sample -> cluster -> experts (+ dense baseline) -> merge ->
router finetuning -> infer -> evaluate -> Table-2-style report, with the MoE's per-expert scores and
its routing oracle (every expert on every input: oracle routing, router regret, expert x cluster matrix).

Each stage runs through its own CLI with a config written to `<work_dir>/configs/<step>.json`, so every
step can be rerun by hand; every stage skips work that is already done, so a rerun takes seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from run_config.cli import config_from_args, run_main, stage_parser
from run_config.errors import ConfigError, LexiconError
from run_config.loader import load_config
from run_config.runtime import atomic_open, write_json, write_manifest
from scripts.experiment import (
    STEP_SECONDS,
    TABLE_METRICS,
    TABLE_SCRIPTS,
    Experiment,
    ExperimentConfig,
    seed_scores,
    write_table,
)

SYSTEMS = {
    "dense": "LM-Lexicon-Dense",
    "moe": "LM-Lexicon-MoE (domain routing)",
    "moe_learned": "LM-Lexicon-MoE (learned domain router)",
    "moe_oracle": "LM-Lexicon-MoE (oracle routing, upper bound)",
}
ORACLE_FILES = ("oracle_report.md", "oracle_report.json", "expert_cluster.png", "hybrid_curve.png")


class PipelineConfig(ExperimentConfig):
    """The whole method on one dataset; per-stage sections hold extra keys of that stage's config."""

    dense_baseline: bool = Field(True, description="also train one dense model on all training data")
    learned_router: bool = Field(True, description="also finetune and evaluate the learned domain router")
    oracle_routing: bool = Field(
        True,
        description="also run every expert of the MoE on every test input of the first seed (N x the MoE's "
        "inference): oracle routing, router regret, the expert x cluster matrix, and the oracle's row",
    )
    report_ci: bool = Field(
        True, description="table2 cells as mean ± half the bootstrap 95% CI (false: mean ± std over seeds)"
    )


def run_pipeline(cfg: PipelineConfig, source: str) -> Path:
    """Run every step for every seed; return the report folder."""
    from evaluation.report import table2

    exp = Experiment(cfg, source)
    models: dict[str, dict[int, Path]] = {}
    for seed in cfg.seeds:
        if cfg.dense_baseline:
            models.setdefault("dense", {})[seed] = exp.dense(seed)
        models.setdefault("moe", {})[seed] = exp.moe(seed=seed)
        if cfg.learned_router and cfg.num_clusters > 1:
            models.setdefault("moe_learned", {})[seed] = exp.router("learned-domain", seed=seed)
    routed = cfg.num_clusters > 1
    scores = {
        name: exp.system(name, runs, group_by=["expert"] if name != "dense" and routed else [])
        for name, runs in models.items()
    }
    oracle = oracle_routing(exp, models["moe"]) if cfg.oracle_routing and routed else {}
    if oracle:
        scores["moe_oracle"] = {dataset: info["scores"] for dataset, info in oracle.items()}
    results = {SYSTEMS[name]: {dataset: seed_scores(s) for dataset, s in per.items()} for name, per in scores.items()}
    ci = {SYSTEMS[name]: {d: ci_of(s) for d, s in per.items()} for name, per in scores.items()}
    metrics = [m for m in TABLE_METRICS if any(m in s for per in results.values() for ss in per.values() for s in ss)]
    out = Path(cfg.work_dir) / "report"
    write_table(table2(results, metrics=metrics, ci=ci if cfg.report_ci else None), out, "table2")
    copy_reports(exp, scores, oracle, out)
    summary = {d: info["report"] for d, info in oracle.items()}
    write_json(out / "report.json", {"results": results, "metrics": metrics, "ci95": ci, "oracle_routing": summary})
    write_manifest(out, "pipeline", cfg)
    return out


def rehearse(args: argparse.Namespace) -> int:
    """The config's setting on CPU with pico models and a few hundred real rows, then every table script, then
    the paper-scale projection of each stage (scripts/rehearsal.py)."""
    from run_config.assets import smollm2_path
    from scripts import rehearsal

    tables = TABLE_SCRIPTS if args.rehearse_tables is None else tuple(args.rehearse_tables)
    unknown = [t for t in tables if t not in TABLE_SCRIPTS]
    if unknown:
        names = ", ".join(TABLE_SCRIPTS)
        raise ConfigError([f"--rehearse-tables: unknown script {', '.join(unknown)} (one of {names})"])
    args.work_dir = args.work_dir or rehearsal.REHEARSAL_DIR
    paper = config_from_args(args, PipelineConfig).model_dump()
    if paper["base_model"] not in rehearsal.PAPER_MODELS:
        known = ", ".join(m for m in rehearsal.PAPER_MODELS if "/" in m)
        raise ConfigError([f"base_model {paper['base_model']}: no paper-scale shape to project (known: {known})"])
    work = Path(paper["work_dir"])
    rehearsal.rehearse_environment()
    tokenizer = smollm2_path()
    pico = rehearsal.build_pico(work / "pico", tokenizer)
    files = args.rehearse_input or paper["input"]
    rows, sources = rehearsal.rehearsal_rows(files, work / "rows.jsonl", seed=paper["seed"])
    data = rehearsal.rehearsal_config(
        paper, work_dir=str(work), seeds=args.rehearse_seeds, base_model=str(pico), rows=str(rows), sources=sources
    )
    path = work / "rehearsal.json"
    write_json(path, data)
    out = run_pipeline(load_config(path, PipelineConfig), str(path))
    print(f"pipeline: rehearsal report in {out}")
    shared = work / "rehearsal_tables.json"  # the paper scripts' config: the experiment keys only
    write_json(shared, {k: v for k, v in data.items() if k in ExperimentConfig.model_fields})
    for name in tables:
        code = importlib.import_module(f"scripts.{name}").main(["--config", str(shared)])
        if code != 0:
            raise LexiconError(f"rehearsal: scripts/{name}.py --config {shared} failed with exit code {code}")
    lines = rehearsal.projection_lines(paper, data, STEP_SECONDS, rehearsal.measured_tokens(rows, tokenizer, data))
    rehearsal.write_report(out / "projection.json", lines, STEP_SECONDS)
    print("\n".join(lines))
    return 0


def ci_of(scores: dict[str, Any]) -> dict[str, list[float]]:
    """The bootstrap 95% CIs of the one system of an evaluate run's scores.json."""
    (per_metric,) = scores["ci95"]["systems"].values()
    return per_metric


def oracle_routing(exp: Experiment, moes: dict[int, Path]) -> dict[str, dict[str, Any]]:
    """Every expert of the first seed's MoE on every test input (`infer --routing oracle`); the oracle's rows
    scored as a system. Returns {dataset: {"folder", "report", "scores"}}."""
    seed, moe = min(moes.items())
    result = {}
    for dataset in exp.test_sets:
        predictions = exp.predict("moe_oracle", moe, dataset, seed, routing="oracle")
        folder = predictions.parent
        best = folder / "oracle_predictions.jsonl"
        result[dataset] = {
            "folder": folder,
            "report": json.loads((folder / "oracle_report.json").read_text(encoding="utf-8")),
            "scores": exp.score("moe_oracle", dataset, {seed: best}),
        }
    return result


def copy_reports(exp: Experiment, scores: dict[str, dict], oracle: dict[str, dict], out: Path) -> None:
    """Copy the routed systems' per-expert tables and the oracle reports (with their plots) into `out`."""
    copies = {
        exp.w / "eval" / name / dataset / f"table_expert.{ext}": out / f"table_expert_{name}_{dataset}.{ext}"
        for name, per in scores.items()
        if name != "moe_oracle"
        for dataset in per
        for ext in ("md", "csv", "tex")
    }
    copies |= {i["folder"] / f: out / "oracle" / d / f for d, i in oracle.items() for f in ORACLE_FILES}
    for src, dst in copies.items():
        if src.is_file():
            with atomic_open(dst, "wb", encoding=None) as f:
                f.write(src.read_bytes())


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("pipeline", __doc__, PipelineConfig)
    group = parser.add_argument_group("rehearsal (docs/pipeline.md)")
    group.add_argument(
        "--rehearse",
        action="store_true",
        help="run the config's setting end to end on CPU with pico models on a few hundred real rows, every "
        "table script, and print each stage's paper-scale projection (work_dir: --work-dir, else runs/rehearsal)",
    )
    group.add_argument("--rehearse-seeds", type=int, metavar="N", help="rehearse the first N seeds (default: all)")
    group.add_argument(
        "--rehearse-input", nargs="+", metavar="FILE", help="real rows to sample from (default: the config's input)"
    )
    group.add_argument(
        "--rehearse-tables", nargs="*", metavar="SCRIPT", help=f"table scripts run (default: {' '.join(TABLE_SCRIPTS)})"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.rehearse:
        return rehearse(args)
    cfg = config_from_args(args, PipelineConfig)
    out = run_pipeline(cfg, args.config or "command line")
    print(f"pipeline: report in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
