"""Fig. 5 (left), number of experts: BLEU and ROUGE-L of the semantic MoE with N = 1, 2, 4, 8 experts.

The paper: 3D-EX test BLEU grows with N (N = 1: 41.38, N = 4: 45.69, N = 8: 46.86; N = 1 is one dense model,
here the `none` partition). Settings in the config's `tables.fig5`: `num_experts` (default [1, 2, 4, 8]) and
`datasets` (default the last test set, 3D-EX in the full setting). Writes `fig5.png` (ours as lines, the
paper's BLEU points as markers) and the table with the paper's values beside ours; every N other than the
config's num_clusters gets a p-value against that MoE (paired t-test on per-item BLEU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from evaluation.report import Table
from run_config.cli import run_main
from run_config.loader import StageConfig
from run_config.runtime import atomic_open
from scripts.experiment import (
    Experiment,
    ExperimentConfig,
    fmt,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import FIG5_BLEU
from scripts.table3 import (
    P_TEST,
    describe,
    mean_std,
    moe_system,
    p_cell,
    p_values,
    report_datasets,
    score_moe,
)


class Fig5Settings(StageConfig):
    """Settings of scripts/fig5.py (`tables.fig5` of the experiment config)."""

    num_experts: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8],
        min_length=1,
        description="numbers of experts N (1: one model on all data)",
    )
    datasets: list[str] | None = Field(
        None, min_length=1, description="test sets reported (null: the last one, 3D-EX in the full setting)"
    )

    @model_validator(mode="after")
    def _valid(self) -> Fig5Settings:
        if any(n < 1 for n in self.num_experts) or len(set(self.num_experts)) != len(self.num_experts):
            raise ValueError(f"num_experts: distinct numbers >= 1, got {self.num_experts}")
        return self


def plot(results: list[dict[str, Any]], datasets: list[str], path: Path, title: str) -> None:
    """BLEU and ROUGE-L against N (ours: a line per test set with ± std; paper: 3D-EX BLEU markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, metric, label in zip(axes, ("bleu", "rougeL"), ("BLEU", "ROUGE-L")):
        for dataset in datasets:
            rows = [r for r in results if r["dataset"] == dataset]
            ax.errorbar(
                [r["n"] for r in rows],
                [r[metric][0] for r in rows],
                yerr=[r[metric][1] for r in rows],
                marker="o",
                capsize=3,
                label=f"ours ({dataset})",
            )
        if metric == "bleu":
            ax.plot(list(FIG5_BLEU), list(FIG5_BLEU.values()), "k*", markersize=10, label="paper (3D-EX)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["n"] for r in results} | (set(FIG5_BLEU) if metric == "bleu" else set())))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("number of experts N")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def run_fig5(cfg: ExperimentConfig, source: str) -> Path:
    """Train, merge, generate and score every N; write the plot and the table; return the tables folder."""
    settings = table_settings(cfg, "fig5", Fig5Settings, source)
    exp = Experiment(cfg, source)
    datasets = report_datasets(exp, settings.datasets, "fig5")
    reference = moe_system(cfg, "semantic", cfg.num_clusters) if cfg.num_clusters in settings.num_experts else None
    order = sorted(settings.num_experts, key=lambda n: (n != cfg.num_clusters, n))  # the reference first
    results: list[dict[str, Any]] = []
    for dataset in datasets:
        for n in order:
            partition = "none" if n == 1 else "semantic"
            compare_to = None if n == cfg.num_clusters else reference
            scores = score_moe(exp, partition, n, dataset, compare_to)
            results.append(
                {
                    "n": n,
                    "dataset": dataset,
                    "system": moe_system(cfg, partition, n),
                    **{m: mean_std(scores, m) for m in ("bleu", "rougeL")},
                    "p": p_values(scores),
                }
            )
    results.sort(key=lambda r: (datasets.index(r["dataset"]), r["n"]))
    rows = [
        [
            str(r["n"]) + (f" · {r['dataset']}" if len(datasets) > 1 else ""),
            fmt(*r["bleu"]),
            fmt(FIG5_BLEU.get(r["n"])),
            fmt(*r["rougeL"]),
            p_cell(r["p"][P_TEST]["bleu"] if r["p"] else None),
        ]
        for r in results
    ]
    table = Table(["N", "BLEU (ours)", "BLEU (paper)", "ROUGE-L (ours)", f"p vs N={cfg.num_clusters} (ours)"], rows)
    title = (
        f"Fig. 5 left (number of experts). Ours: {describe(cfg)}; scored on {', '.join(datasets)}; N = 1 is "
        f"the no-split model. Paper: Llama-3-8B experts on 3D-EX (BLEU at N = 1, 4, 8 from its text)."
    )
    out = Path(cfg.work_dir) / "tables"
    plot(results, datasets, out / "fig5.png", title)
    print(title)
    write_table(
        table,
        out,
        "fig5",
        {
            "title": title,
            "p_test": P_TEST,
            "settings": settings.model_dump(),
            "rows": results,
            "paper_bleu": FIG5_BLEU,
            "plot": str(out / "fig5.png"),
        },
    )
    print(f"fig5: plot -> {out / 'fig5.png'}")
    return out


def build_parser() -> argparse.ArgumentParser:
    return table_parser("fig5", __doc__)


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    run_fig5(cfg, source)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
