"""Per-domain dense export: expert e of a merged MoE -> a plain dense checkpoint of the experts' family (Llama,
Qwen3, Qwen2) any engine (vLLM) can serve."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from run_config.errors import DataError
from run_config.runtime import MANIFEST, file_sizes, files_intact, staged_dir, write_json
from training.moe.checkpoint import ROUTING_FILE, read_routing
from training.moe.plan import MIXTRAL, QWEN3_MOE, dense_ffn_key, parse_moe_key
from training.moe.safetensors_stream import CheckpointReader, ShardedWriter, TensorInfo

EXPORT_INDEX = "experts.json"
_COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "tokenizer.model",
)


def dense_name(name: str, expert: int) -> str | None:
    parsed = parse_moe_key(name)
    if parsed is not None:
        layer, e, proj = parsed
        return dense_ffn_key(layer, proj) if e == expert else None
    return None if MIXTRAL.is_block_only(name) or QWEN3_MOE.is_block_only(name) else name


def export_dense(moe_dir: str | Path, expert: int, out_dir: str | Path, max_shard_bytes: int = 2000 * 2**20) -> Path:
    """Write expert `expert` of `moe_dir` (shared tensors + its FFN) as a dense checkpoint in `out_dir`."""
    moe_dir, out = Path(moe_dir), Path(out_dir)
    routing = read_routing(moe_dir)
    if not 0 <= expert < routing["num_experts"]:
        raise DataError(
            str(moe_dir / ROUTING_FILE), None, "num_experts", f"no expert {expert} among {routing['num_experts']}"
        )
    reader = CheckpointReader(moe_dir)
    mapping = {src: dst for src in reader.info if (dst := dense_name(src, expert)) is not None}
    infos = [TensorInfo(dst, reader.info[src].shape, reader.info[src].dtype) for src, dst in mapping.items()]
    moe_config = json.loads((moe_dir / "config.json").read_text(encoding="utf-8"))
    dense_config = {**routing["dense_config"], "dtype": moe_config.get("dtype", routing["dense_config"].get("dtype"))}
    with staged_dir(out) as tmp:
        with ShardedWriter(tmp, infos, max_shard_bytes) as writer:
            for src, dst in mapping.items():
                writer.copy(dst, reader, src)
            writer.finalize()
        for name in _COPIED:
            if (moe_dir / name).is_file():
                shutil.copy(moe_dir / name, tmp / name)
        write_json(tmp / "config.json", dense_config)
    return out


def _source(moe_dir: str | Path) -> str | None:
    """Digest of the MoE folder's manifest: ties an export to the merge it was cut from."""
    path = Path(moe_dir) / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def export_all_dense(moe_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Export every expert to `out_dir/expert_<e>`, then write `experts.json` (expert id -> folder, cluster map,
    the size of every exported file and the MoE it came from)."""
    routing = read_routing(moe_dir)
    paths = [export_dense(moe_dir, e, Path(out_dir) / f"expert_{e}") for e in range(routing["num_experts"])]
    write_json(
        Path(out_dir) / EXPORT_INDEX,
        {
            "moe_dir": str(Path(moe_dir).resolve()),
            "experts": {str(e): p.name for e, p in enumerate(paths)},
            "cluster_to_expert": routing["cluster_to_expert"],
            "source": _source(moe_dir),
            "files": {p.name: file_sizes(p) for p in paths},
        },
    )
    return paths


def exports_complete(moe_dir: str | Path, out_dir: str | Path) -> bool:
    """True when `out_dir` holds every dense export of `moe_dir` as written (index, folders, file sizes)."""
    path = Path(out_dir) / EXPORT_INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = index.get("files") or {}
    return (
        index.get("moe_dir") == str(Path(moe_dir).resolve())
        and index.get("source") == _source(moe_dir)
        and sorted(files) == sorted(index.get("experts", {}).values())
        and all(files_intact(Path(out_dir) / name, sizes) for name, sizes in files.items())
    )
