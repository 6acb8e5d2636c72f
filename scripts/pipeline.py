"""End-to-end pipeline: preprocess -> sample -> cluster -> experts (+ dense baseline) -> merge ->
router finetuning -> infer -> evaluate -> Table-2-style report.

Each stage runs through its own CLI with a config written to `<work_dir>/configs/<step>.json`, so every
step can be rerun by hand; every stage skips work that is already done, so a rerun takes seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import Field

from run_config.cli import config_from_args, run_main, stage_parser
from run_config.runtime import write_json, write_manifest
from scripts.experiment import TABLE_METRICS, Experiment, ExperimentConfig, seed_scores, write_table

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


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("pipeline", __doc__, PipelineConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, PipelineConfig)
    out = run_pipeline(cfg, args.config or "command line")
    print(f"pipeline: report in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
