"""The merged-MoE folder format, owned here alone.

A merged MoE folder is a stock Mixtral checkpoint (config, tokenizer, safetensors shards) plus:

* `routing.json`: default policy and top-k, the cluster -> expert map, the experts it was merged from,
  the dense config (for per-domain exports) and, once trained, the learned domain classifier's entry;
* `clustering/`: a copy of the clustering artefacts (centroids, embedder description, TF-IDF vocabulary)
  that domain routing embeds prompts with;
* `domain_classifier.safetensors`: the learned domain router (policy learned-domain), when trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from clustering.artifacts import assigner_files
from run_config.errors import DataError
from run_config.runtime import write_json

ROUTING_FILE = "routing.json"
CLASSIFIER_FILE = "domain_classifier.safetensors"
CLUSTER_SUBDIR = "clustering"


def is_moe_folder(path: str | Path) -> bool:
    """True when `path` is a merged MoE folder (it holds routing.json)."""
    return (Path(path) / ROUTING_FILE).is_file()


def read_routing(path: str | Path) -> dict[str, Any]:
    """Read `routing.json` of a merged MoE folder."""
    file = Path(path) / ROUTING_FILE
    if not file.is_file():
        raise DataError(str(path), None, None, f"not a merged MoE folder (no {ROUTING_FILE})")
    return json.loads(file.read_text(encoding="utf-8"))


def write_routing(folder: str | Path, routing: dict[str, Any]) -> None:
    write_json(Path(folder) / ROUTING_FILE, routing)


def new_routing(
    policy: str,
    top_k: int,
    experts: list[str],
    router_init: str,
    shared_params: str,
    cluster_to_expert: list[int],
    with_clusters: bool,
    dense_config: dict[str, Any],
) -> dict[str, Any]:
    """Contents of a fresh merge's routing.json (no learned domain classifier yet)."""
    return {
        "policy": policy,
        "top_k": top_k,
        "num_experts": len(experts),
        "router_init": router_init,
        "experts": [str(Path(e).resolve()) for e in experts],
        "shared_params": shared_params,
        "cluster_dir": CLUSTER_SUBDIR if with_clusters else None,
        "cluster_to_expert": cluster_to_expert,
        "domain_classifier": None,
        "dense_config": dense_config,
    }


def copy_clusters(cluster_dir: str | Path, folder: str | Path) -> None:
    """Copy the clustering artefacts of `cluster_dir` into `folder/clustering/`."""
    src, dst = Path(cluster_dir), Path(folder) / CLUSTER_SUBDIR
    dst.mkdir()
    for name in assigner_files(src):
        shutil.copy(src / name, dst / name)


def carry_clusters(src_folder: str | Path, folder: str | Path) -> None:
    """Copy a merged MoE's `clustering/` copy (if any) into the MoE folder being written at `folder`."""
    if (Path(src_folder) / CLUSTER_SUBDIR).is_dir():
        shutil.copytree(Path(src_folder) / CLUSTER_SUBDIR, Path(folder) / CLUSTER_SUBDIR)


def cluster_dir(path: str | Path, routing: dict[str, Any]) -> Path:
    """The folder of centroids that domain routing of the MoE at `path` reads."""
    sub = routing.get("cluster_dir")
    if not sub:
        raise DataError(
            str(Path(path) / ROUTING_FILE),
            None,
            "cluster_dir",
            "this MoE was merged without --cluster-dir: no centroids to route by",
        )
    return Path(path) / sub


def save_classifier(folder: str | Path, state: dict[str, Any], layer: int, info: dict[str, Any]) -> dict[str, Any]:
    """Write the domain classifier's tensors; return its routing.json entry (file, layer, accuracies)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(Path(folder) / CLASSIFIER_FILE))
    return {
        "file": CLASSIFIER_FILE,
        "layer": layer,
        "features": "mean hidden state of the prompt after `layer` layers",
        **{k: v for k, v in info.items() if "accuracy" in k or "agreement" in k},
    }


def load_classifier(path: str | Path, routing: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """(tensors, layer) of the learned domain classifier named in routing.json, or None when untrained."""
    info = routing.get("domain_classifier")
    if not info:
        return None
    from safetensors.torch import load_file

    return load_file(str(Path(path) / info["file"])), int(info["layer"])
