"""Convert stage: an MoE folder in the original code's mergoo layout -> this toolkit's MoE folder, policy mergoo.

In the mergoo layout (the paper's released MoEs) each FFN projection P named in config.json's `router_layers`
of each layer L in `router_layers_index` (absent: every layer) has its own experts and router,
`model.layers.L.mlp.P.experts.E.weight` and `model.layers.L.mlp.P.gate.weight` [experts, in_features]; other
projections stay dense (`model.layers.L.mlp.P.weight`). The converted folder is a Mixtral checkpoint (expert
E's projections in expert slot E, a dense projection copied into every slot, gate_proj's router in the Mixtral
router slot) plus every per-projection router in its own file (training/moe/checkpoint.py), which the mergoo
policy routes by. Streams one tensor at a time; every check runs before anything is written, and the output
folder appears complete (manifest last) or not at all.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

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
from training.moe.checkpoint import converted_routing, projection_router_key, save_projection_routers, write_routing
from training.moe.config import ConvertConfig
from training.moe.plan import (
    FFN_TO_MIXTRAL,
    SKIPPED_SUFFIXES,
    DenseCheckpoint,
    PlannedTensor,
    dense_ffn_key,
    expert_key,
    mixtral_config,
    open_dense,
    router_key,
    tensor_order,
)
from training.moe.router_init import random_router
from training.moe.safetensors_stream import INDEX_FILE, ShardedWriter, TensorInfo

log = logging.getLogger(__name__)
MERGOO_KEYS = ("num_experts", "num_experts_per_tok", "router_layers", "router_layers_index")
PROJECTIONS = tuple(FFN_TO_MIXTRAL)  # gate_proj, up_proj, down_proj
_COPIED = ("generation_config.json",)


def mergoo_expert_key(layer: int, proj: str, expert: int) -> str:
    return f"model.layers.{layer}.mlp.{proj}.experts.{expert}.weight"


@dataclass
class MergooFolder:
    """A mergoo MoE folder: its tensors, its config without the MoE keys, and what it routes."""

    ckpt: DenseCheckpoint
    dense_config: dict[str, Any]
    num_experts: int
    top_k: int
    layers: list[int]
    projections: list[str]

    @property
    def folder(self) -> Path:
        return self.ckpt.folder


def open_mergoo(folder: str | Path) -> MergooFolder:
    """Read and check a mergoo folder's config.json; errors name the file and key."""
    ckpt = open_dense(folder)
    config, cfg_path = ckpt.config, str(ckpt.folder / "config.json")
    if "num_experts" not in config:
        raise DataError(cfg_path, None, "num_experts", "not a mergoo MoE folder (a dense model needs no conversion)")
    n, k = config["num_experts"], config.get("num_experts_per_tok")
    if type(n) is not int or n < 1:
        raise DataError(cfg_path, None, "num_experts", f"expected a positive integer, got {n!r}")
    if type(k) is not int or not 1 <= k <= n:
        raise DataError(cfg_path, None, "num_experts_per_tok", f"expected an integer in [1, {n}], got {k!r}")
    projections = config.get("router_layers")
    if not isinstance(projections, list) or not projections or len(set(map(str, projections))) != len(projections):
        raise DataError(
            cfg_path, None, "router_layers", f"expected a list of distinct projections, got {projections!r}"
        )
    unsupported = [p for p in projections if p not in PROJECTIONS]
    if unsupported:
        raise DataError(
            cfg_path, None, "router_layers", f"{unsupported[0]!r} cannot be routed here; only {', '.join(PROJECTIONS)}"
        )
    n_layers = int(config["num_hidden_layers"])
    layers = config.get("router_layers_index")
    if layers is None:
        layers = list(range(n_layers))
    elif (
        not isinstance(layers, list)
        or any(type(i) is not int or not 0 <= i < n_layers for i in layers)
        or len(set(layers)) != len(layers)
    ):
        raise DataError(
            cfg_path, None, "router_layers_index", f"expected distinct layer ids in [0, {n_layers}), got {layers!r}"
        )
    dense = {key: v for key, v in config.items() if key not in MERGOO_KEYS}
    return MergooFolder(ckpt, dense, n, k, sorted(layers), [p for p in PROJECTIONS if p in projections])


def dense_shapes(m: MergooFolder) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the dense model that the config describes (built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in m.dense_config.items() if k != "model_type"}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(m.dense_config["model_type"], **kwargs))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if m.ckpt.tied:
        shapes.pop("lm_head.weight", None)
    return shapes


@dataclass
class ConvertPlan:
    """The Mixtral tensors to write, in order, and the per-projection routers (absent ones drawn at random)."""

    tensors: list[PlannedTensor]
    routers: dict[str, TensorInfo]
    missing: list[str]


def plan_convert(m: MergooFolder, init_missing_gates: bool) -> ConvertPlan:
    """Check every tensor against the config and plan the output; raises before anything is written."""
    reader, n = m.ckpt.reader, m.num_experts
    where = str(m.folder / INDEX_FILE) if (m.folder / INDEX_FILE).is_file() else str(m.folder)
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...], why: str) -> TensorInfo:
        if key not in reader:
            raise DataError(where, None, key, f"missing tensor ({why})")
        info = reader.info[key]
        if info.shape != shape:
            raise DataError(
                str(reader.file_of[key]), None, key, f"shape {list(info.shape)}, config.json implies {list(shape)}"
            )
        used.add(key)
        return info

    shapes = dense_shapes(m)
    ffn = {dense_ffn_key(layer, p) for layer in range(int(m.dense_config["num_hidden_layers"])) for p in PROJECTIONS}
    tensors = [
        PlannedTensor(take(key, shape, "part of the model config.json describes"), ("copy", key))
        for key, shape in shapes.items()
        if key not in ffn
    ]
    routers: dict[str, TensorInfo] = {}
    missing: list[str] = []
    for layer in range(int(m.dense_config["num_hidden_layers"])):
        routed = m.projections if layer in m.layers else []
        dtypes: dict[str, torch.dtype] = {}
        for proj in PROJECTIONS:
            shape = shapes[dense_ffn_key(layer, proj)]
            if proj in routed:
                why = f"config.json routes {proj} of layer {layer} over {n} experts"
                sources = [take(mergoo_expert_key(layer, proj, e), shape, why) for e in range(n)]
                gate = projection_router_key(layer, proj)
                if gate in reader:
                    routers[gate] = take(gate, (n, shape[1]), why)
                else:
                    missing.append(gate)
                    routers[gate] = TensorInfo(gate, (n, shape[1]), sources[0].dtype)
            else:
                sources = [take(dense_ffn_key(layer, proj), shape, f"{proj} of layer {layer} is not routed")] * n
            dtypes[proj] = sources[0].dtype
            tensors += [
                PlannedTensor(TensorInfo(expert_key(layer, e, FFN_TO_MIXTRAL[proj]), shape, s.dtype), ("copy", s.name))
                for e, s in enumerate(sources)
            ]
        slot = next((projection_router_key(layer, p) for p in ("gate_proj", "up_proj") if p in routed), None)
        hidden = int(m.dense_config["hidden_size"])
        dtype = routers[slot].dtype if slot else dtypes["gate_proj"]
        tensors.append(PlannedTensor(TensorInfo(router_key(layer), (n, hidden), dtype), ("router", slot)))
    unexpected = sorted(k for k in set(reader.info) - used if not k.endswith(SKIPPED_SUFFIXES))
    if m.ckpt.tied:
        unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if unexpected:
        raise DataError(
            str(reader.file_of[unexpected[0]]),
            None,
            unexpected[0],
            f"not part of the layout config.json describes ({len(unexpected)} such tensor(s))",
        )
    if missing and not init_missing_gates:
        raise DataError(
            where,
            None,
            missing[0],
            f"router missing ({len(missing)} of {len(routers)} absent); "
            "--init-missing-gates draws them from N(0, initializer_range) instead",
        )
    return ConvertPlan(sorted(tensors, key=lambda p: tensor_order(p.info.name)), routers, missing)


def build_routers(m: MergooFolder, plan: ConvertPlan, seed: int) -> dict[str, torch.Tensor]:
    """Every per-projection router: read, or (missing ones) drawn from N(0, initializer_range) in plan order."""
    gen = torch.Generator().manual_seed(seed)
    std = float(m.dense_config.get("initializer_range", 0.02))
    return {
        key: random_router(*info.shape, std, gen).to(info.dtype) if key in plan.missing else m.ckpt.reader.read(key)
        for key, info in plan.routers.items()
    }


def _tensor(item: PlannedTensor, m: MergooFolder, routers: dict[str, torch.Tensor]) -> torch.Tensor:
    kind, key = item.source
    if kind == "router":
        t = routers[key] if key else torch.zeros(item.info.shape)
    else:
        t = m.ckpt.reader.read(key)
    return t.to(item.info.dtype)


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise DataError(str(folder), None, "tokenizer", f"cannot load the tokenizer: {e}") from None


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    """Run the conversion; return a summary. Raises before writing anything when the input does not fit."""
    set_seed(cfg.seed)
    m = open_mergoo(cfg.input)
    plan = plan_convert(m, cfg.init_missing_gates)
    tokenizer = _load_tokenizer(m.folder)
    if plan.missing:
        log.warning(
            "%s: %d of %d routers missing (first %s): drawn from N(0, initializer_range) with seed %d, so this MoE "
            "routes at random, not as the model it came from",
            m.folder,
            len(plan.missing),
            len(plan.routers),
            plan.missing[0],
            cfg.seed,
        )
    routers = build_routers(m, plan, cfg.seed)
    with staged_dir(cfg.output_dir) as tmp:
        with ShardedWriter(tmp, [p.info for p in plan.tensors], cfg.max_shard_size_mb * 2**20) as writer:
            for item in tqdm(plan.tensors, desc="convert", unit=" tensors", mininterval=1.0, disable=None):
                writer.write(item.info.name, _tensor(item, m, routers))
            writer.finalize()
        mixtral_config(m.dense_config, m.num_experts, m.top_k, 0.0, "auto").save_pretrained(tmp)
        tokenizer.save_pretrained(str(tmp))
        for name in _COPIED:
            if (m.folder / name).is_file():
                shutil.copy(m.folder / name, tmp / name)
        entry = save_projection_routers(tmp, routers, m.layers, m.projections)
        router_init = "converted" if not plan.missing else "converted; missing ones N(0, initializer_range)"
        write_routing(
            tmp, converted_routing(m.folder, cfg.format, m.num_experts, m.top_k, router_init, m.dense_config, entry)
        )
        summary = {
            "experts": m.num_experts,
            "routers": len(routers),
            "initialised_routers": len(plan.missing),
            "tensors": len(plan.tensors),
            "shards": len(writer.shards),
            "bytes": sum(p.info.nbytes for p in plan.tensors),
        }
        write_manifest(tmp, "convert", cfg, inputs=inputs_fingerprint(cfg), files=file_sizes(tmp), **summary)
    return summary


def is_up_to_date(cfg: ConvertConfig) -> bool:
    """True when output_dir holds a finished conversion of this config and these input files, every file whole."""
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg)) and files_intact(
        cfg.output_dir, read_manifest(cfg.output_dir).get("files")
    )


def build_parser() -> argparse.ArgumentParser:
    return stage_parser("convert", __doc__, ConvertConfig)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ConvertConfig)
    if skip_finished("convert", cfg, is_up_to_date):
        return 0
    summary = convert(cfg)
    print(
        f"convert: {cfg.format} {cfg.input} -> {cfg.output_dir} ({summary['experts']} experts, "
        f"{summary['routers']} routers ({summary['initialised_routers']} initialised), {summary['tensors']} tensors, "
        f"{summary['shards']} shard(s))"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
