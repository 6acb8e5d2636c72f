"""The cluster stage's output folder format, owned here alone: file names and the per-cluster split files.

OUT/ holds `centroids.npy`, `embedder.json` (how to embed a new input), `tfidf.json` (TF-IDF embedder only),
`assignments.jsonl`, `report.json`, `clusters.png` and `clusters/cluster-{k}/{train,valid,test}.jsonl`.
"""

from __future__ import annotations

import re
from pathlib import Path

CENTROIDS_FILE = "centroids.npy"
EMBEDDER_FILE = "embedder.json"
TFIDF_FILE = "tfidf.json"
ASSIGNMENTS_FILE = "assignments.jsonl"
REPORT_FILE = "report.json"
PLOT_FILE = "clusters.png"
CLUSTERS_SUBDIR = "clusters"
ASSIGNER_FILES = (CENTROIDS_FILE, EMBEDDER_FILE)  # what routing a new input needs
ASSIGNER_OPTIONAL = (TFIDF_FILE,)  # read too when present (a TF-IDF embedder)
_CLUSTER_FOLDER = re.compile(r"cluster-(\d+)")


def cluster_folder(out: str | Path, k: int) -> Path:
    """The folder of cluster `k`'s records."""
    return Path(out) / CLUSTERS_SUBDIR / f"cluster-{k}"


def cluster_split_file(out: str | Path, k: int, split: str) -> Path:
    """The records of `split` routed to cluster `k`."""
    return cluster_folder(out, k) / f"{split}.jsonl"


def cluster_folders(out: str | Path) -> list[tuple[int, Path]]:
    """(k, folder) of every `clusters/cluster-{k}/` under `out`, in k order."""
    root = Path(out) / CLUSTERS_SUBDIR
    found = ((m, p) for p in root.glob("cluster-*") if (m := _CLUSTER_FOLDER.fullmatch(p.name)) and p.is_dir())
    return sorted((int(m.group(1)), p) for m, p in found)


def missing_assigner_files(out: str | Path) -> list[Path]:
    """The files routing needs (ASSIGNER_FILES) that `out` lacks."""
    return [Path(out) / n for n in ASSIGNER_FILES if not (Path(out) / n).is_file()]


def assigner_files(out: str | Path) -> list[str]:
    """Names of the routing files present in `out` (the required ones and any optional one)."""
    return [n for n in ASSIGNER_FILES + ASSIGNER_OPTIONAL if (Path(out) / n).is_file()]
