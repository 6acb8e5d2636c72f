"""Table 3, data partition ablation: the MoE built from semantic, no, random or lexical (TF-IDF) data partitions.

The paper: 4 x Llama-3-8B experts trained on the 3D-EX clusters of each partition and merged into a
domain-routed MoE, scored on the 3D-EX test set (mean ± std over seeds 21/42/84), p-values against the
semantic clusters. Here: `none` is one model on all training data (N = 1), every other partition N experts
(the config's num_clusters) merged; settings in the config's `tables.table3`: `partitions` (default the
paper's four) and `datasets` (rows reported; default the last test set, 3D-EX in the full setting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from evaluation.report import Table
from run_config.cli import run_main
from run_config.errors import ConfigError
from run_config.loader import StageConfig
from scripts.experiment import (
    Experiment,
    ExperimentConfig,
    fmt,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import TABLE3

Partition = Literal["semantic", "none", "random", "lexical"]
LABELS = {
    "semantic": "LM-Lexicon (semantic clusters, N={n})",
    "none": "+ w/ no split (N=1)",
    "random": "+ w/ random split (N={n}, balanced)",
    "lexical": "+ w/ lexical split (TF-IDF, N={n})",
}
P_TEST = "ttest"
P_NOTE = (
    "p (ours): paired t-test on per-item BLEU against the semantic row (the paper does not name its test; "
    "the paired bootstrap cannot go below 2/(B+1), the paper's p-values do; both are in table3.json)"
)


class Table3Settings(StageConfig):
    """Settings of scripts/table3.py (`tables.table3` of the experiment config)."""

    partitions: list[Partition] = Field(
        default_factory=lambda: ["semantic", "none", "random", "lexical"],
        min_length=1,
        description="partitions compared (semantic is the reference)",
    )
    datasets: list[str] | None = Field(
        None, min_length=1, description="test sets reported (null: the last one, 3D-EX in the full setting)"
    )

    @model_validator(mode="after")
    def _unique(self) -> Table3Settings:
        if len(set(self.partitions)) != len(self.partitions):
            raise ValueError(f"partitions: each partition once, got {self.partitions}")
        return self


def moe_system(cfg: ExperimentConfig, partition: str, n: int) -> str:
    """The system name of an MoE variant in work_dir (the semantic N = num_clusters MoE is `moe`, as in pipeline)."""
    return "moe" if partition == "semantic" and n == cfg.num_clusters else f"moe-{partition}-N{n}"


def report_datasets(exp: Experiment, wanted: list[str] | None, key: str) -> list[str]:
    """The test sets a script reports: `wanted`, else the last test set; an unknown name is a ConfigError."""
    available = list(exp.test_sets)
    unknown = [d for d in wanted or [] if d not in available]
    if unknown:
        raise ConfigError(
            [
                f"{exp.source}: tables.{key}.datasets: unknown test set {d!r} (one of {', '.join(available)})"
                for d in unknown
            ]
        )
    return wanted or available[-1:]


def score_moe(exp: Experiment, partition: str, n: int, dataset: str, compare_to: str | None) -> dict[str, Any]:
    """Generate with every seed's MoE of (partition, N) on `dataset` and score it (vs `compare_to`)."""
    system = moe_system(exp.cfg, partition, n)
    runs = {seed: exp.predict(system, exp.moe(partition, n, seed), dataset, seed) for seed in exp.cfg.seeds}
    return exp.score(system, dataset, runs, compare_to=compare_to)


def mean_std(scores: dict[str, Any], metric: str) -> tuple[float, float]:
    """Mean and std over seeds of one metric of a scores.json."""
    (info,) = scores["systems"].values()
    return info["mean"][metric], info["std"][metric]


def p_values(scores: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """{test: {metric: p}} of a scores.json compared to another system (t-test and bootstrap); None if not."""
    tests = scores.get("significance", {}).get("metrics")
    if not tests:
        return None
    return {kind: {m: t[kind]["p_value"] for m, t in tests.items()} for kind in ("ttest", "bootstrap")}


def data_label(cfg: ExperimentConfig) -> str:
    """The training data of the config, in words."""
    return f"the embedded {cfg.builtin} lexicon" if cfg.builtin else ", ".join(cfg.input)


def describe(cfg: ExperimentConfig) -> str:
    """What our numbers come from, read from the config (base model, embedder, data, items, seeds)."""
    items = f"{cfg.eval_items} test items per set" if cfg.eval_items else "full test sets"
    return (
        f"{cfg.base_model} experts, {cfg.embedder} clusters, trained on {data_label(cfg)} "
        f"({cfg.train_records or 'all'} train records), {items}, seeds {', '.join(map(str, cfg.seeds))}"
    )


def p_cell(p: float | None) -> str:
    return "–" if p is None else f"{p:.1e}"


def run_table3(cfg: ExperimentConfig, source: str) -> Path:
    """Train, merge, generate and score every partition; write and print Table 3; return the tables folder."""
    settings = table_settings(cfg, "table3", Table3Settings, source)
    exp = Experiment(cfg, source)
    datasets = report_datasets(exp, settings.datasets, "table3")
    order = sorted(settings.partitions, key=lambda p: p != "semantic")  # the reference is scored first
    reference = moe_system(cfg, "semantic", cfg.num_clusters) if "semantic" in order else None
    results: list[dict[str, Any]] = []
    for dataset in datasets:
        for partition in order:
            n = 1 if partition == "none" else cfg.num_clusters
            scores = score_moe(exp, partition, n, dataset, None if partition == "semantic" else reference)
            results.append(
                {
                    "partition": partition,
                    "n": n,
                    "dataset": dataset,
                    "system": moe_system(cfg, partition, n),
                    **{m: mean_std(scores, m) for m in ("bleu", "rougeL")},
                    "p": p_values(scores),
                }
            )
    rows = []
    for r in results:
        (pb, pb_std), (pr, pr_std), pp = TABLE3[r["partition"]]
        label = LABELS[r["partition"]].format(n=r["n"]) + (f" · {r['dataset']}" if len(datasets) > 1 else "")
        rows.append(
            [
                label,
                fmt(*r["bleu"]),
                fmt(pb, pb_std),
                fmt(*r["rougeL"]),
                fmt(pr, pr_std),
                p_cell(r["p"][P_TEST]["bleu"] if r["p"] else None),
                p_cell(pp),
            ]
        )
    table = Table(
        ["Setting", "BLEU (ours)", "BLEU (paper)", "ROUGE-L (ours)", "ROUGE-L (paper)", "p (ours)", "p (paper)"], rows
    )
    title = (
        f"Table 3 (data partition ablation). Ours: {describe(cfg)}; scored on {', '.join(datasets)}. "
        f"Paper: 4 x Llama-3-8B MoE on 3D-EX, seeds 21/42/84."
    )
    out = Path(cfg.work_dir) / "tables"
    print(title)
    write_table(
        table,
        out,
        "table3",
        {
            "title": title,
            "p_test": P_TEST,
            "p_note": P_NOTE,
            "settings": settings.model_dump(),
            "rows": results,
            "paper": {k: list(v) for k, v in TABLE3.items()},
        },
    )
    print(P_NOTE)
    return out


def build_parser() -> argparse.ArgumentParser:
    return table_parser("table3", __doc__)


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    out = run_table3(cfg, source)
    print(f"table3: tables in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
