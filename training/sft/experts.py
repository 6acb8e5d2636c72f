"""One expert per cluster: DIR/clusters/cluster-{k}/{train,valid}.jsonl -> OUT/expert-{k}/ (HF folders)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustering.artifacts import CLUSTERS_SUBDIR, cluster_folders
from run_config.errors import DataError
from training.launcher import deepspeed_argv
from training.sft.config import TrainConfig

HOLDOUT_FRACTION = 0.1  # share of an expert's train rows held out when its cluster has no valid rows


@dataclass(frozen=True)
class Cluster:
    """The training inputs of one cluster."""

    index: int
    train_file: Path
    valid_file: Path


def discover_clusters(experts_dir: str | Path) -> list[Cluster]:
    """Clusters written by the clustering stage, in index order; each needs train.jsonl and valid.jsonl."""
    found = cluster_folders(experts_dir)
    if not found:
        raise DataError(
            str(Path(experts_dir) / CLUSTERS_SUBDIR),
            None,
            None,
            "no cluster-{k} folders (run `python main.py cluster` first)",
        )
    clusters = []
    for k, folder in found:
        for name in ("train.jsonl", "valid.jsonl"):
            if not (folder / name).is_file():
                raise DataError(str(folder / name), None, None, "no such file")
        clusters.append(Cluster(k, folder / "train.jsonl", folder / "valid.jsonl"))
    return clusters


def has_rows(path: Path) -> bool:
    """True when the JSONL file holds at least one non-blank line."""
    with open(path, encoding="utf-8") as f:
        return any(line.strip() for line in f)


def expert_config(cfg: TrainConfig, cluster: Cluster) -> TrainConfig:
    """The run config of one expert: the cluster's splits, OUT/expert-{k}, a run name per expert.

    Routing valid rows by centroid is not balanced, so a cluster may get none: its expert then validates
    on a seeded hold-out of its own train rows (valid_holdout, HOLDOUT_FRACTION unless set)."""
    name = f"expert-{cluster.index}"
    run_name = f"{cfg.run_name}-{name}" if cfg.run_name else name
    update: dict[str, Any] = {
        "train_file": str(cluster.train_file),
        "valid_file": str(cluster.valid_file),
        "output_dir": str(Path(cfg.output_dir) / name),
        "run_name": run_name,
    }
    if cfg.do_validation and cfg.valid_holdout is None and not has_rows(cluster.valid_file):
        update.update(valid_file=None, valid_holdout=HOLDOUT_FRACTION)
    return cfg.model_copy(update=update)


def train_experts(
    cfg: TrainConfig,
    experts_dir: str | Path,
    train_one: Callable[[TrainConfig], Any],
    is_finished: Callable[[TrainConfig], bool],
) -> list[dict[str, Any]]:
    """Train the experts one after another from the same base; finished ones are skipped.

    `train_one` resumes an interrupted expert from its last checkpoint by itself.
    """
    results = []
    for cluster in discover_clusters(experts_dir):
        sub = expert_config(cfg, cluster)
        if is_finished(sub):
            results.append({"expert": cluster.index, "output_dir": sub.output_dir, "status": "skipped (finished)"})
            continue
        train_one(sub)
        results.append({"expert": cluster.index, "output_dir": sub.output_dir, "status": "trained"})
    return results


def expert_args(cfg: TrainConfig, cluster: Cluster, config_path: str | None) -> list[str]:
    """The train stage's arguments that train the expert of `cluster` (after a launcher or `python -m`)."""
    sub = expert_config(cfg, cluster)
    argv = ["--config", config_path] if config_path else []
    argv += ["--train-file", sub.train_file]
    argv += ["--valid-file", sub.valid_file] if sub.valid_file else ["--valid-holdout", str(sub.valid_holdout)]
    argv += ["--output-dir", sub.output_dir, "--run-name", sub.run_name]
    if cfg.deepspeed:
        argv += ["--deepspeed", cfg.deepspeed]
    if cfg.force:
        argv.append("--force")
    return argv


def launcher_commands(
    cfg: TrainConfig,
    experts_dir: str | Path,
    config_path: str | None,
    num_gpus: int,
    hostfile: str | None = None,
    num_nodes: int = 1,
) -> list[str]:
    """`deepspeed` commands that train each expert on `num_gpus` GPUs (of each of `num_nodes` hosts of
    `hostfile`; one per line, runnable anywhere the package is installed)."""
    launcher = deepspeed_argv(num_gpus, hostfile, num_nodes)
    return [shlex.join(launcher + expert_args(cfg, c, config_path)) for c in discover_clusters(experts_dir)]
