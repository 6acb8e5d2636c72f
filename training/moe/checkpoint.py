"""The merged-MoE folder format, owned here alone.

A merged MoE folder is a stock Mixtral, Qwen3-MoE or Qwen2-MoE checkpoint (config, tokenizer, safetensors
shards) plus:

* `routing.json`: default policy and top-k, the ensemble/hybrid settings (`ensemble_k`, `ensemble_temperature`,
  `hybrid_tau`), the cluster -> expert map, the experts it was merged from,
  the dense config (for per-domain exports) and, once trained, the learned domain classifier's entry;
* `clustering/`: a copy of the clustering artefacts (centroids, embedder description, TF-IDF vocabulary)
  that domain routing embeds prompts with;
* `domain_classifier.safetensors`: the learned domain router (policy learned-domain), when trained;
* `projection_routers.safetensors`: a converted mergoo MoE's three routers per routed layer (policy mergoo),
  named `model.layers.L.mlp.{gate_proj,up_proj,down_proj}.gate.weight` as in the original layout, and listed
  (file, layers, projections) under routing.json's `projection_routers`;
* `merge_config.json` and `README.md` (a merge's resolved config and model card, written by training/moe/card.py).
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
PROJECTION_ROUTERS_FILE = "projection_routers.safetensors"
# Ensemble/hybrid settings of a folder whose routing.json predates them (MergeConfig's defaults).
ENSEMBLE_DEFAULTS = {"ensemble_k": 2, "ensemble_temperature": 0.1, "hybrid_tau": 0.05}
MERGE_CONFIG_FILE = "merge_config.json"
CARD_FILE = "README.md"


def config_num_experts(config: Any) -> int:
    """Experts of a merged MoE's config: Mixtral's num_local_experts, Qwen-MoE's num_experts."""
    value = getattr(config, "num_local_experts", None)
    return int(value if value is not None else config.num_experts)


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
    ensemble: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Contents of a fresh merge's routing.json (no learned domain classifier yet); `ensemble` holds
    ensemble_k, ensemble_temperature and hybrid_tau (ENSEMBLE_DEFAULTS when None)."""
    return {
        "policy": policy,
        "top_k": top_k,
        **(ensemble or ENSEMBLE_DEFAULTS),
        "num_experts": len(experts),
        "router_init": router_init,
        "experts": [str(Path(e).resolve()) for e in experts],
        "shared_params": shared_params,
        "cluster_dir": CLUSTER_SUBDIR if with_clusters else None,
        "cluster_to_expert": cluster_to_expert,
        "domain_classifier": None,
        "dense_config": dense_config,
    }


def converted_routing(
    source: str | Path,
    source_format: str,
    num_experts: int,
    top_k: int,
    router_init: str,
    dense_config: dict[str, Any],
    projection_routers: dict[str, Any],
) -> dict[str, Any]:
    """Contents of a converted MoE's routing.json: policy mergoo, no clusters, the source folder and its routers."""
    routing = new_routing("mergoo", top_k, [], router_init, "average", list(range(num_experts)), False, dense_config)
    routing.update(
        num_experts=num_experts, converted_from={"format": source_format, "folder": str(Path(source).resolve())}
    )
    routing["projection_routers"] = projection_routers
    return routing


def projection_router_key(layer: int, proj: str) -> str:
    """Name of layer `layer`'s router of FFN projection `proj` (the mergoo name, kept in the converted folder)."""
    return f"model.layers.{layer}.mlp.{proj}.gate.weight"


def save_projection_routers(
    folder: str | Path, routers: dict[str, Any], layers: list[int], projections: list[str]
) -> dict[str, Any]:
    """Write the per-projection routers (name -> tensor); return their routing.json entry."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in routers.items()}, str(Path(folder) / PROJECTION_ROUTERS_FILE))
    return {"file": PROJECTION_ROUTERS_FILE, "layers": layers, "projections": projections}


def load_projection_routers(path: str | Path, routing: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    """{layer: {projection: router tensor}} of a converted mergoo MoE, or None when routing.json lists none."""
    info = routing.get("projection_routers")
    if not info:
        return None
    from safetensors.torch import load_file

    file = Path(path) / info["file"]
    if not file.is_file():
        raise DataError(str(file), None, None, f"missing: {ROUTING_FILE} lists per-projection routers here")
    tensors = load_file(str(file))
    out: dict[int, dict[str, Any]] = {}
    for layer in info["layers"]:
        for proj in info["projections"]:
            key = projection_router_key(layer, proj)
            if key not in tensors:
                raise DataError(str(file), None, key, "router missing")
            out.setdefault(int(layer), {})[proj] = tensors[key]
    return out


def carry_projection_routers(src_folder: str | Path, folder: str | Path) -> None:
    """Copy a converted MoE's per-projection routers (if any) into the MoE folder being written at `folder`."""
    if (Path(src_folder) / PROJECTION_ROUTERS_FILE).is_file():
        shutil.copy(Path(src_folder) / PROJECTION_ROUTERS_FILE, Path(folder) / PROJECTION_ROUTERS_FILE)


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
