"""Per-domain dense export: expert e of a merged MoE -> a plain Llama checkpoint any engine (vLLM) can serve."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from run_config.errors import DataError
from run_config.runtime import write_json
from training.merge_plan import dense_ffn_key, parse_moe_key
from training.safetensors_stream import CheckpointReader, ShardedWriter, TensorInfo
from training.staging import staged_dir

EXPORT_INDEX = "experts.json"
_COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
           "generation_config.json", "tokenizer.model")


def _dense_name(name: str, expert: int) -> str | None:
    parsed = parse_moe_key(name)
    if parsed is not None:
        layer, e, proj = parsed
        return dense_ffn_key(layer, proj) if e == expert else None
    return None if name.endswith("block_sparse_moe.gate.weight") else name


def export_dense(moe_dir: str | Path, expert: int, out_dir: str | Path, max_shard_bytes: int = 2000 * 2**20) -> Path:
    """Write expert `expert` of `moe_dir` (shared tensors + its FFN) as a dense checkpoint in `out_dir`."""
    moe_dir, out = Path(moe_dir), Path(out_dir)
    routing_path = moe_dir / "routing.json"
    if not routing_path.is_file():
        raise DataError(str(moe_dir), None, None, "not a merged MoE folder (no routing.json)")
    routing = json.loads(routing_path.read_text(encoding="utf-8"))
    if not 0 <= expert < routing["num_experts"]:
        raise DataError(str(routing_path), None, "num_experts", f"no expert {expert} among {routing['num_experts']}")
    reader = CheckpointReader(moe_dir)
    mapping = {src: dst for src in reader.info if (dst := _dense_name(src, expert)) is not None}
    infos = [TensorInfo(dst, reader.info[src].shape, reader.info[src].dtype) for src, dst in mapping.items()]
    moe_config = json.loads((moe_dir / "config.json").read_text(encoding="utf-8"))
    dense_config = {**routing["dense_config"], "dtype": moe_config.get("dtype", routing["dense_config"].get("dtype"))}
    with staged_dir(out) as tmp:
        with ShardedWriter(tmp, infos, max_shard_bytes) as writer:
            for src, dst in mapping.items():
                writer.write(dst, reader.read(src))
            writer.finalize()
        for name in _COPIED:
            if (moe_dir / name).is_file():
                shutil.copy(moe_dir / name, tmp / name)
        write_json(tmp / "config.json", dense_config)
    return out


def export_all_dense(moe_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Export every expert to `out_dir/expert_<e>` and write `experts.json` (expert id -> folder, cluster map)."""
    routing = json.loads((Path(moe_dir) / "routing.json").read_text(encoding="utf-8"))
    paths = [export_dense(moe_dir, e, Path(out_dir) / f"expert_{e}") for e in range(routing["num_experts"])]
    write_json(Path(out_dir) / EXPORT_INDEX, {"moe_dir": str(Path(moe_dir).resolve()),
                                              "experts": {str(e): p.name for e, p in enumerate(paths)},
                                              "cluster_to_expert": routing["cluster_to_expert"]})
    return paths
