"""Reports: mean ± std over seeds and the paper's Table 2 (systems x datasets x metrics, plus Avg. when the
table has more than one dataset).

`table2(results)` takes {system: {dataset: [scores of each seed]}} and returns a `Table` that renders
as Markdown, CSV or LaTeX; with `ci` ({system: {dataset: {metric: [low, high]}}}) a cell's ± is half the
width of its bootstrap 95% CI instead of the std over seeds. `python -m evaluation.report --runs DIR ...
--output-dir OUT [--report-ci]` builds it from the scores.json of several evaluate runs (one dataset each).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from run_config.cli import config_from_args, run_main, stage_parser
from run_config.errors import ConfigError, DataError
from run_config.loader import StageConfig
from run_config.runtime import AtomicFileSet

LABELS = {
    "bleu": "BLEU",
    "rougeL": "ROUGE",
    "meteor": "METEOR",
    "nist": "NIST",
    "bertscore": "BERTScore",
    "moverscore": "MoverScore",
    "mauve": "MAUVE",
    "sacrebleu": "sacreBLEU",
}


def shown_metrics(metrics: Sequence[str], report_sacrebleu: bool) -> list[str]:
    """The metric columns: `metrics`, with standard sacreBLEU right after BLEU when `report_sacrebleu`."""
    out = list(metrics)
    if report_sacrebleu and "sacrebleu" not in out:
        out.insert(out.index("bleu") + 1 if "bleu" in out else len(out), "sacrebleu")
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value), as the paper's ± columns."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


@dataclass
class Table:
    """A rendered-on-demand table: header and rows of cells (strings)."""

    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows]) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buf.getvalue()

    def latex(self) -> str:
        def esc(text: str) -> str:
            return (
                text.replace("\\", "\\textbackslash{}")
                .replace("&", "\\&")
                .replace("%", "\\%")
                .replace("_", "\\_")
                .replace("#", "\\#")
                .replace("±", "$\\pm$")
            )

        lines = [
            "\\begin{tabular}{l" + "r" * (len(self.header) - 1) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in self.header) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows]
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"

    def write(self, out_dir: str | Path, stem: str, files: AtomicFileSet) -> list[Path]:
        """Write `<stem>.md`, `.csv` and `.tex` into `out_dir` through `files`."""
        paths = []
        for suffix, text in ((".md", self.markdown()), (".csv", self.csv()), (".tex", self.latex())):
            path = Path(out_dir) / f"{stem}{suffix}"
            files.get(path).write(text)
            paths.append(path)
        return paths


Intervals = Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]  # system -> dataset -> metric -> [lo, hi]


def half_width(interval: Sequence[float]) -> float:
    """Half the width of a [low, high] interval: the ± printed for a CI."""
    return (interval[1] - interval[0]) / 2


def table2(
    results: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]],
    datasets: Sequence[str] | None = None,
    metrics: Sequence[str] = ("bleu", "rougeL"),
    digits: int = 2,
    ci: Intervals | None = None,
) -> Table:
    """Table 2: one row per system, `dataset metric` columns (mean ± std over seeds), then Avg. per metric
    when there are two datasets or more (with one, Avg. would repeat its columns).

    Args:
        results: system -> dataset -> one score dict per seed (metric -> value on 0-100).
        datasets: column order (default: first-seen order); a missing cell is "–" and left out of Avg.
        ci: bootstrap 95% CIs; given, a cell is mean ± half the CI width (no ± where the cell has no CI:
            MAUVE).
    """
    if datasets is None:
        datasets = list(dict.fromkeys(d for per in results.values() for d in per))
    averaged = metrics if len(datasets) > 1 else []
    header = ["Method"] + [f"{d} {LABELS.get(m, m)}" for d in datasets for m in metrics]
    header += [f"Avg. {LABELS.get(m, m)}" for m in averaged]
    rows = []
    for system, per in results.items():
        cells, means = [system], {m: [] for m in metrics}
        for d in datasets:
            for m in metrics:
                values = [s[m] for s in per.get(d, []) if m in s]
                if not values:
                    cells.append("–")
                    continue
                mean, std = mean_std(values)
                means[m].append(mean)
                if ci is not None:
                    interval = ci.get(system, {}).get(d, {}).get(m)
                    cells.append(f"{mean:.{digits}f}" + (f"±{half_width(interval):.{digits}f}" if interval else ""))
                else:
                    cells.append(f"{mean:.{digits}f}" + (f"±{std:.{digits}f}" if len(values) > 1 else ""))
        cells += [f"{np.mean(means[m]):.{digits}f}" if means[m] else "–" for m in averaged]
        rows.append(cells)
    return Table(header, rows)


def read_scores(paths: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """(path, content) of each evaluate output (folder or scores.json file)."""
    out = []
    for p in paths:
        path = Path(p) / "scores.json" if Path(p).is_dir() else Path(p)
        if not path.is_file():
            raise DataError(str(path), None, None, "no such file (expected an evaluate output folder)")
        data = json.loads(path.read_text(encoding="utf-8"))
        if "systems" not in data or "dataset" not in data:
            raise DataError(str(path), None, "systems", "missing: not a scores.json written by evaluate")
        out.append((path, data))
    return out


def results_from_scores(paths: Sequence[str | Path]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Collect {system: {dataset: [per-seed scores]}} from evaluate outputs (folders or scores.json files)."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for _, data in read_scores(paths):
        for system, info in data["systems"].items():
            results.setdefault(system, {}).setdefault(data["dataset"], []).extend(
                run["scores"] for run in info["seeds"]
            )
    return results


def intervals_from_scores(paths: Sequence[str | Path]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Collect {system: {dataset: {metric: [low, high]}}} (scores.json `ci95`); an output without one is an error."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for path, data in read_scores(paths):
        if "ci95" not in data:
            raise DataError(str(path), None, "ci95", "missing (written by an older evaluate: rerun it)")
        for system, per_metric in data["ci95"]["systems"].items():
            if data["dataset"] in out.get(system, {}):
                raise DataError(
                    str(path),
                    None,
                    "ci95",
                    f"{system} on {data['dataset']} is in another run too: a CI covers one "
                    "evaluate run (score every seed of a system in one predictions file)",
                )
            out.setdefault(system, {})[data["dataset"]] = dict(per_metric)
    return out


class ReportConfig(StageConfig):
    """Inputs and outputs of a Table-2 report."""

    runs: list[str] = Field(description="evaluate output folders (or their scores.json), any systems/datasets")
    output_dir: str = Field(description="writes table2.md, table2.csv, table2.tex")
    datasets: list[str] = Field(default_factory=list, description="column order (default: first seen)")
    metrics: list[str] = Field(default_factory=lambda: ["bleu", "rougeL"], description="metric keys per dataset")
    report_sacrebleu: bool = Field(
        False,
        description="add standard corpus sacreBLEU after the paper's BLEU "
        "(the runs must be evaluated with metric sacrebleu)",
    )
    report_ci: bool = Field(
        False, description="print ± half the width of each cell's bootstrap 95% CI (scores.json ci95), not the std"
    )
    digits: int = Field(2, ge=0, description="decimals")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("evaluation.report", __doc__, ReportConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ReportConfig)
    results = results_from_scores(cfg.runs)
    if cfg.report_sacrebleu:
        missing = [
            f"{system} on {dataset}"
            for system, per in results.items()
            for dataset, seeds in per.items()
            if any("sacrebleu" not in s for s in seeds)
        ]
        if missing:
            raise ConfigError(
                f"report_sacrebleu: no sacrebleu score for {', '.join(missing[:3])} (evaluate with "
                "metrics including sacrebleu)"
            )
    ci = intervals_from_scores(cfg.runs) if cfg.report_ci else None
    table = table2(results, cfg.datasets or None, shown_metrics(cfg.metrics, cfg.report_sacrebleu), cfg.digits, ci)
    with AtomicFileSet() as files:
        paths = table.write(cfg.output_dir, "table2", files)
    print(table.markdown(), end="")
    print(f"evaluation.report: wrote {', '.join(str(p) for p in paths)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
