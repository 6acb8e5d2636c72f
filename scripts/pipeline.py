"""End-to-end pipeline: preprocess -> sample -> cluster -> experts (+ dense baseline) -> merge ->
router finetuning -> infer -> evaluate -> Table-2-style report.

Each stage runs through its own CLI with a config written to `<work_dir>/configs/<step>.json`, so every
step can be rerun by hand; every stage skips work that is already done, so a rerun takes seconds.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pydantic import Field

from run_config.cli import config_from_args, run_main, stage_parser
from run_config.errors import ConfigError, LexiconError
from run_config.loader import load_config
from run_config.runtime import write_json, write_manifest
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
}


class PipelineConfig(ExperimentConfig):
    """The whole method on one dataset; per-stage sections hold extra keys of that stage's config."""

    dense_baseline: bool = Field(True, description="also train one dense model on all training data")
    learned_router: bool = Field(True, description="also finetune and evaluate the learned domain router")


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
    results = {
        SYSTEMS[name]: {dataset: seed_scores(scores) for dataset, scores in exp.system(name, runs).items()}
        for name, runs in models.items()
    }
    metrics = [m for m in TABLE_METRICS if any(m in s for per in results.values() for ss in per.values() for s in ss)]
    out = Path(cfg.work_dir) / "report"
    write_table(table2(results, metrics=metrics), out, "table2")
    write_json(out / "report.json", {"results": results, "metrics": metrics})
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
