"""Per-domain dense export: expert e of a merged MoE -> a plain dense checkpoint of the experts' family (Llama,
Qwen3, Qwen2) any engine (vLLM) can serve.

The export computes what the MoE computes, and its config says what its weights hold: tied (no lm_head tensor;
vLLM would skip a stored one and use the input embeddings) when the MoE ties them, else untied with the MoE's
lm_head (vLLM refuses an untied config without one). `untie` stores a tied head as a tensor of its own (the input
embeddings copied, tie_word_embeddings false), for engines and adapters that need a separate output head.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

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


EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def ties_embeddings(config: dict[str, Any]) -> bool:
    """The effective tie_word_embeddings of a config.json (its family's default when the key is absent)."""
    from transformers import AutoConfig

    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    rest = {k: v for k, v in config.items() if k != "model_type"}
    return bool(AutoConfig.for_model(config["model_type"], **rest).tie_word_embeddings)


def export_dense(
    moe_dir: str | Path, expert: int, out_dir: str | Path, max_shard_bytes: int = 2000 * 2**20, untie: bool = False
) -> Path:
    """Write expert `expert` of `moe_dir` (shared tensors + its FFN) as a dense checkpoint in `out_dir`; a tied
    head stored as its own lm_head when `untie` is set (module docstring)."""
    moe_dir, out = Path(moe_dir), Path(out_dir)
    routing = read_routing(moe_dir)
    if not 0 <= expert < routing["num_experts"]:
        raise DataError(
            str(moe_dir / ROUTING_FILE), None, "num_experts", f"no expert {expert} among {routing['num_experts']}"
        )
    reader = CheckpointReader(moe_dir)
    pairs = [(src, dst) for src in reader.info if (dst := dense_name(src, expert)) is not None]
    moe_config = json.loads((moe_dir / "config.json").read_text(encoding="utf-8"))
    dense_config = {**routing["dense_config"], "dtype": moe_config.get("dtype", routing["dense_config"].get("dtype"))}
    tied = ties_embeddings(moe_config)  # what the MoE computes with
    if tied:  # the MoE's output head is its input embeddings, whatever lm_head tensor a shard may hold
        pairs = [(src, dst) for src, dst in pairs if dst != HEAD]
        if untie:
            pairs.append((EMBED, HEAD))
    elif HEAD not in reader:
        raise DataError(str(moe_dir), None, HEAD, "missing while tie_word_embeddings is false")
    dense_config["tie_word_embeddings"] = tied and not untie
    infos = [TensorInfo(dst, reader.info[src].shape, reader.info[src].dtype) for src, dst in pairs]
    with staged_dir(out) as tmp:
        with ShardedWriter(tmp, infos, max_shard_bytes) as writer:
            for src, dst in pairs:
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


def export_all_dense(moe_dir: str | Path, out_dir: str | Path, untie: bool = False) -> list[Path]:
    """Export every expert to `out_dir/expert_<e>` (`untie`: see export_dense), then write `experts.json` (expert
    id -> folder, cluster map, untie, the size of every exported file and the MoE it came from)."""
    routing = read_routing(moe_dir)
    paths = [
        export_dense(moe_dir, e, Path(out_dir) / f"expert_{e}", untie=untie) for e in range(routing["num_experts"])
    ]
    write_json(
        Path(out_dir) / EXPORT_INDEX,
        {
            "moe_dir": str(Path(moe_dir).resolve()),
            "experts": {str(e): p.name for e, p in enumerate(paths)},
            "cluster_to_expert": routing["cluster_to_expert"],
            "untie": untie,
            "source": _source(moe_dir),
            "files": {p.name: file_sizes(p) for p in paths},
        },
    )
    return paths


def exports_complete(moe_dir: str | Path, out_dir: str | Path, untie: bool = False) -> bool:
    """True when `out_dir` holds every dense export of `moe_dir` as written (index, folders, file sizes), untied
    as asked."""
    path = Path(out_dir) / EXPORT_INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = index.get("files") or {}
    return (
        index.get("moe_dir") == str(Path(moe_dir).resolve())
        and index.get("source") == _source(moe_dir)
        and bool(index.get("untie")) == untie
        and sorted(files) == sorted(index.get("experts", {}).values())
        and all(files_intact(Path(out_dir) / name, sizes) for name, sizes in files.items())
    )
