"""Merge stage: N dense experts -> one stock MoE checkpoint (FFN i = expert i) + routing metadata: Llama/Mistral ->
Mixtral, Qwen3 -> Qwen3-MoE, Qwen2 -> Qwen2-MoE.

Streams one tensor at a time (safe_open in, planned shards out); every check runs before anything is
written, and the output folder appears complete (manifest last) or not at all.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from clustering.artifacts import CENTROIDS_FILE, missing_assigner_files
from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.errors import DataError
from run_config.runtime import (
    file_sizes,
    files_intact,
    inputs_fingerprint,
    is_finished,
    read_manifest,
    set_seed,
    staged_dir,
    write_manifest,
)
from training.moe.card import cluster_examples, write_card
from training.moe.checkpoint import copy_clusters, new_routing, write_routing
from training.moe.config import MergeConfig
from training.moe.export import export_all_dense, exports_complete
from training.moe.plan import (
    DenseCheckpoint,
    PlannedTensor,
    check_compatible,
    check_tokenizers,
    moe_config,
    open_dense,
    plan_merge,
)
from training.moe.router_init import centroid_groups, mean_router_inputs, random_router, read_pairs, router_from_means
from training.moe.safetensors_stream import ShardedWriter

log = logging.getLogger(__name__)
_COPIED = ("generation_config.json",)


def is_up_to_date(cfg: MergeConfig) -> bool:
    """True when output_dir holds a finished merge of this config and these expert files, every file it wrote
    whole, and so do the dense exports when asked for."""
    if not is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg)):
        return False
    return files_intact(cfg.output_dir, read_manifest(cfg.output_dir).get("files")) and (
        cfg.dense_export_dir is None or exports_complete(cfg.output_dir, cfg.dense_export_dir, cfg.untie_embeddings)
    )


def check_cluster_dir(cfg: MergeConfig) -> int | None:
    """Validate the clustering artefacts; return the number of clusters (None without cluster_dir)."""
    if cfg.cluster_dir is None:
        return None
    folder = Path(cfg.cluster_dir)
    for missing in missing_assigner_files(folder):
        raise DataError(str(missing), None, None, "missing clustering artefact")
    centroids = np.load(folder / CENTROIDS_FILE, mmap_mode="r")
    if centroids.ndim != 2 or centroids.shape[0] != len(cfg.experts):
        raise DataError(
            str(folder / CENTROIDS_FILE),
            None,
            None,
            f"{centroids.shape[0] if centroids.ndim == 2 else centroids.shape} centroids "
            f"for {len(cfg.experts)} experts",
        )
    return int(centroids.shape[0])


def _router_prompts(cfg: MergeConfig) -> list[list[tuple[str, str]]]:
    """(term, context) pairs per expert for the hidden/centroids router init."""
    if cfg.router_init == "hidden":
        return [read_pairs(p, cfg.router_prompt_samples) for p in cfg.router_prompt_files]
    from clustering.assign import load_assigner

    pool = [pair for p in cfg.router_prompt_files for pair in read_pairs(p, cfg.router_prompt_samples)]
    to_expert = cfg.cluster_to_expert or list(range(len(cfg.experts)))
    return centroid_groups(pool, load_assigner(cfg.cluster_dir), to_expert, len(cfg.experts))


def build_routers(cfg: MergeConfig, ref: DenseCheckpoint) -> torch.Tensor:
    """Router weights [layers, experts, hidden] (float32) for the configured init."""
    layers, hidden = int(ref.config["num_hidden_layers"]), int(ref.config["hidden_size"])
    if cfg.router_init == "random":
        gen = torch.Generator().manual_seed(cfg.seed)
        std = float(ref.config.get("initializer_range", 0.02))
        return torch.stack([random_router(len(cfg.experts), hidden, std, gen) for _ in range(layers)])
    model_dir = cfg.base_model or cfg.experts[0]
    log.info("router init %s: mean FFN inputs of %s", cfg.router_init, model_dir)
    return router_from_means(mean_router_inputs(model_dir, _router_prompts(cfg)))


def _unchanged(item: PlannedTensor, experts: list[DenseCheckpoint]) -> bool:
    """True for an expert tensor stored in the output dtype: its bytes are copied as they are."""
    if item.source[0] != "expert":
        return False
    _, e, key = item.source
    return experts[e].reader.info[key].dtype == item.info.dtype


def _tensor(
    item: PlannedTensor, experts: list[DenseCheckpoint], shared: list[DenseCheckpoint], routers: torch.Tensor
) -> torch.Tensor:
    kind = item.source[0]
    if kind == "zeros":
        return torch.zeros(item.info.shape, dtype=item.info.dtype)
    if kind == "expert":
        _, e, key = item.source
        t = experts[e].reader.read(key)
    elif kind == "router":
        t = routers[item.source[1]]
    elif len(shared) == 1:
        t = shared[0].reader.read(item.source[1])
    else:
        acc = shared[0].reader.read(item.source[1]).to(torch.float32)
        for ckpt in shared[1:]:
            acc += ckpt.reader.read(item.source[1]).to(torch.float32)
        t = acc / len(shared)
    return t.to(item.info.dtype)


def routing_metadata(cfg: MergeConfig, dense_config: dict[str, Any], num_clusters: int | None) -> dict[str, Any]:
    """Contents of routing.json: default policy, k, router init, cluster <-> expert map, dense config."""
    return new_routing(
        cfg.policy,
        cfg.top_k,
        cfg.experts,
        cfg.router_init,
        cfg.shared_params,
        cfg.cluster_to_expert or list(range(len(cfg.experts))),
        bool(num_clusters),
        dense_config,
        {
            "ensemble_k": cfg.ensemble_k,
            "ensemble_temperature": cfg.ensemble_temperature,
            "hybrid_tau": cfg.hybrid_tau,
        },
    )


def merge(cfg: MergeConfig) -> dict[str, Any]:
    """Run the merge; return a summary. Raises before writing anything when the inputs do not fit."""
    set_seed(cfg.seed)
    experts = [open_dense(f) for f in cfg.experts]
    for i, ckpt in enumerate(experts[1:], 1):
        check_compatible(experts[0], ckpt, f"expert {i}")
    base = open_dense(cfg.base_model) if cfg.base_model else None
    if base is not None:
        check_compatible(experts[0], base, "base_model")
    check_tokenizers([c.folder for c in experts])
    num_clusters = check_cluster_dir(cfg)
    examples = cluster_examples(cfg.cluster_dir, num_clusters)
    plan = plan_merge(experts, cfg.dtype)
    routers = build_routers(cfg, experts[0])
    shared = {"average": experts, "base": [base], "expert": [experts[cfg.shared_expert]]}[cfg.shared_params]

    out = Path(cfg.output_dir)
    with staged_dir(out) as tmp:
        with ShardedWriter(tmp, [p.info for p in plan], cfg.max_shard_size_mb * 2**20) as writer:
            for item in tqdm(plan, desc="merge", unit=" tensors", mininterval=1.0, disable=None):
                if _unchanged(item, experts):
                    writer.copy(item.info.name, experts[item.source[1]].reader, item.source[2])
                else:
                    writer.write(item.info.name, _tensor(item, experts, shared, routers))
            writer.finalize()
        moe_config(experts[0].config, len(experts), cfg.top_k, cfg.router_aux_loss_coef, cfg.dtype).save_pretrained(tmp)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(experts[0].folder)).save_pretrained(str(tmp))
        for name in _COPIED:
            if (experts[0].folder / name).is_file():
                shutil.copy(experts[0].folder / name, tmp / name)
        if num_clusters:
            copy_clusters(cfg.cluster_dir, tmp)
        write_routing(tmp, routing_metadata(cfg, experts[0].config, num_clusters))
        write_card(tmp, cfg, examples, experts[0].layout.architecture)
        summary = {
            "experts": len(experts),
            "tensors": len(plan),
            "shards": len(writer.shards),
            "bytes": sum(p.info.nbytes for p in plan),
        }
        write_manifest(tmp, "merge", cfg, inputs=inputs_fingerprint(cfg), files=file_sizes(tmp), **summary)
    if cfg.dense_export_dir:
        summary["dense_exports"] = [str(p) for p in export_all_dense(out, cfg.dense_export_dir, cfg.untie_embeddings)]
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("merge", __doc__, MergeConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, MergeConfig)
    if skip_finished("merge", cfg, is_up_to_date):
        return 0
    summary = merge(cfg)
    print(
        f"merge: {summary['experts']} experts -> {cfg.output_dir} ({summary['tensors']} tensors, "
        f"{summary['shards']} shard(s), {summary['bytes'] / 2**20:.0f} MiB)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
