"""Tables 7/8, cluster cohesion and separation: intra-cluster and inter-centroid distances of the semantic clusters.

The paper: N = 4 clusters of 3D-EX train, L2-normalised NV-Embed-v2 embeddings of instruction + definition;
Table 7 the mean Euclidean distance of each cluster's points to its mean (lower = more cohesive), Table 8
the Euclidean distance between each pair of cluster means (higher = better separated). Only clustering
runs (no training). Settings in the config's `tables.table7_8`: `text_field` (default the paper's
instruction_definition) and `num_clusters` (null: the config's num_clusters, 4 in the shipped configs).
The paper names its clusters (Adjective, Scientific, Proper Noun, Person Name); ours are numbered in
k-means order, so each row shows the cluster's most typical terms instead of claiming a match.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from clustering.artifacts import REPORT_FILE
from clustering.embed import TextField
from evaluation.report import Table
from run_config.cli import run_main
from run_config.loader import StageConfig
from run_config.runtime import write_json
from scripts.experiment import (
    Experiment,
    ExperimentConfig,
    table_config,
    table_parser,
    table_settings,
    write_table,
)
from scripts.paper_numbers import TABLE7, TABLE8
from scripts.table3 import data_label

NOTE = (
    "Rows pair our clusters with the paper's by position only: the numbering of k-means clusters is "
    "arbitrary; compare the example terms with the paper's cluster names."
)


class Table78Settings(StageConfig):
    """Settings of scripts/table7_8.py (`tables.table7_8` of the experiment config)."""

    text_field: TextField = Field(
        "instruction_definition", description="embedded text (the paper's: instruction_definition)"
    )
    num_clusters: int | None = Field(None, ge=2, description="number of clusters (null: the config's num_clusters)")


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def paper_rows(paper: dict[str, float]) -> list[tuple[str, float]]:
    """The paper's per-cluster (or per-pair) entries in its order, without the average."""
    return [(name, value) for name, value in paper.items() if name != "avg"]


def table7(report: dict[str, Any]) -> Table:
    """Per cluster: size, example terms, our intra distance and cosine cohesion, beside the paper's row."""
    intra, cohesion = report["paper_intra_distance"], report["cohesion"]
    paper = paper_rows(TABLE7)
    rows = []
    for j in range(max(report["num_clusters"], len(paper))):
        ours = (
            [
                f"C{j}",
                str(report["sizes"][j]),
                ", ".join(report["examples"][j]),
                cell(intra["per_cluster"][j]),
                cell(cohesion["per_cluster"][j]),
            ]
            if j < report["num_clusters"]
            else ["–"] * 5
        )
        rows.append(ours + (list(paper[j][:1]) + [cell(paper[j][1])] if j < len(paper) else ["–", "–"]))
    rows.append(
        ["avg", str(sum(report["sizes"])), "", cell(intra["mean"]), cell(cohesion["mean"]), "avg", cell(TABLE7["avg"])]
    )
    return Table(
        [
            "Cluster (ours)",
            "Size",
            "Example terms (ours)",
            "Intra distance (ours)",
            "Mean cosine (ours)",
            "Cluster (paper)",
            "Intra distance (paper)",
        ],
        rows,
    )


def table8(report: dict[str, Any]) -> Table:
    """Per cluster pair: our inter-centroid distance and cosine separation, beside the paper's pair."""
    inter, separation = report["paper_inter_distance"], report["separation"]
    ours = list(inter["per_pair"])
    paper = paper_rows(TABLE8)
    rows = []
    for i in range(max(len(ours), len(paper))):
        row = (
            [f"C{ours[i].replace('-', '–C')}", cell(inter["per_pair"][ours[i]]), cell(separation["per_pair"][ours[i]])]
            if i < len(ours)
            else ["–"] * 3
        )
        rows.append(row + ([paper[i][0].replace("-", "–"), cell(paper[i][1])] if i < len(paper) else ["–", "–"]))
    rows.append(["avg", cell(inter["mean"]), cell(separation["mean"]), "avg", cell(TABLE8["avg"])])
    return Table(
        ["Pair (ours)", "Inter distance (ours)", "Cosine distance (ours)", "Pair (paper)", "Inter distance (paper)"],
        rows,
    )


def run_table7_8(cfg: ExperimentConfig, source: str) -> Path:
    """Cluster (or reuse the clusters), then write and print Tables 7 and 8; return the tables folder."""
    settings = table_settings(cfg, "table7_8", Table78Settings, source)
    exp = Experiment(cfg, source)
    folder = exp.clusters("semantic", settings.num_clusters, text_field=settings.text_field)
    report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    embedder = cfg.cluster.get("embedder", cfg.embedder)
    title = (
        f"Tables 7/8 (cluster cohesion / separation). Ours: {report['num_clusters']} semantic clusters of "
        f"{report['train_rows']} train records of {data_label(cfg)}, {embedder} embeddings of "
        f"{settings.text_field} ({folder.name}). Paper: N = 4 on 3D-EX, NV-Embed-v2 embeddings of "
        f"instruction + definition. "
        f"Distances: Euclidean between unit-norm embeddings (intra: point to its cluster mean; inter: "
        f"between cluster means); mean cosine: mean pairwise cosine similarity in a cluster (all points: "
        f"{report['cohesion']['baseline_all_points']:.3f}); cosine distance: between normalised means."
    )
    out = Path(cfg.work_dir) / "tables"
    print(title)
    write_table(table7(report), out, "table7")
    write_table(table8(report), out, "table8")
    print(NOTE)
    write_json(
        out / "table7_8.json",
        {
            "title": title,
            "note": NOTE,
            "settings": settings.model_dump(),
            "clusters": str(folder),
            "sizes": report["sizes"],
            "examples": report["examples"],
            **{key: report[key] for key in ("cohesion", "separation", "paper_intra_distance", "paper_inter_distance")},
            "paper": {"table7": TABLE7, "table8": TABLE8},
        },
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    return table_parser("table7_8", __doc__)


def _run(args: argparse.Namespace) -> int:
    cfg, source = table_config(args)
    out = run_table7_8(cfg, source)
    print(f"table7_8: tables in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
