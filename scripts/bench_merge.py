"""Benchmark the MoE merge's memory: streamed merge vs a naive merge that loads every expert at once.

Four SmolLM2-135M experts (the model + 3 copies with perturbed FFNs) are merged twice, each in a fresh
child process that reports its own peak RSS: by `training.moe.merge` (safe_open one tensor at a time,
planned shards written tensor by tensor) and naively (from_pretrained x4, merged state dict in memory,
one save), like the original code. A third child only imports the same libraries (interpreter baseline).
The goal: streamed peak RSS <= 1.5 x one expert's weights.

Then, at scale (`--throughput-gb`, default 2.0; 0 skips it): four synthetic Llama experts of that many GB
each (random bf16 weights, SmolLM2's tokenizer) are copied with `cp` and merged, both into the same temp
filesystem, both with the expert files read into the page cache just before, both timed until their outputs
are fsynced. Throughput is expert bytes per second; the goal: the merge >= 0.5 x `cp`'s bytes/s, with its
peak RSS still <= 1.5 x one expert. The last lines are `throughput_ratio=<merge / cp> goal=0.5` and
`ratio=<streamed peak RSS / one expert> goal=1.5` (the larger of the two runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL, THROUGHPUT_GOAL = 1.5, 0.5

# VmHWM (peak RSS of this process image); ru_maxrss would carry the parent's peak across exec.
_REPORT = "print('RSS', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
_BASELINE = "import torch, transformers, safetensors, numpy\nfrom transformers import AutoModelForCausalLM\n" + _REPORT
_STREAM = "import sys\nfrom training.moe.merge import main\nrc = main(sys.argv[1:])\n" + _REPORT + "\nsys.exit(rc)"
# The same merge, timed from its call until every output file is fsynced (imports excluded, as for cp).
_STREAM_TIMED = (
    "import sys, time\nfrom training.moe.merge import main\nfrom scripts.bench_merge import fsync_tree\n"
    "t0 = time.perf_counter()\nrc = main(sys.argv[1:])\nfsync_tree(sys.argv[sys.argv.index('--output-dir') + 1])\n"
    "print('SECONDS', time.perf_counter() - t0)\n" + _REPORT + "\nsys.exit(rc)"
)
_NAIVE = (
    """import sys, torch
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file
experts, out = sys.argv[1:-1], sys.argv[-1]
models = [AutoModelForCausalLM.from_pretrained(e, dtype=torch.float32) for e in experts]
merged = {}
for i, m in enumerate(models):
    for k, v in m.state_dict().items():
        if '.mlp.' in k:
            merged[k.replace('.mlp.', f'.block_sparse_moe.experts.{i}.')] = v.clone()
        elif k != 'lm_head.weight':
            merged[k] = merged.get(k, 0) + v / len(models)
save_file({k: v.contiguous() for k, v in merged.items()}, out)
"""
    + _REPORT
)


def child(code: str, *args: str) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; return (seconds, its peak RSS in MiB). Seconds are the child's own
    `SECONDS` line when it prints one, else the wall time of the whole process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    values = {
        line.split()[0]: float(line.split()[1])
        for line in proc.stdout.splitlines()
        if line.startswith(("RSS ", "SECONDS "))
    }
    return values.get("SECONDS", seconds), values["RSS"] / 1024


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder` (the bytes are on disk, not only in the page cache)."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def read_into_cache(folders: list[Path]) -> int:
    """Read every file under `folders` once (so both contestants start from the page cache); return the bytes."""
    total = 0
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                with open(path, "rb") as f:
                    while chunk := f.read(64 << 20):
                        total += len(chunk)
    return total


def synthetic_expert(smol: Path, dst: Path, gigabytes: float, seed: int) -> Path:
    """A Llama checkpoint of about `gigabytes` GB (bf16, random weights, untied head, GQA) with SmolLM2's tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig

    from training.moe.safetensors_stream import ShardedWriter, TensorInfo

    hidden, inter, kv, vocab = 2048, 5632, 512, 49152
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    layers = max(1, math.ceil((gigabytes * 1e9 / 2 - 2 * vocab * hidden - hidden) / per_layer))
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        shapes |= {pre + "input_layernorm.weight": (hidden,), pre + "post_attention_layernorm.weight": (hidden,)}
        shapes |= {pre + f"self_attn.{p}_proj.weight": (hidden, hidden) for p in ("q", "o")}
        shapes |= {pre + f"self_attn.{p}_proj.weight": (kv, hidden) for p in ("k", "v")}
        shapes |= {pre + f"mlp.{p}_proj.weight": (inter, hidden) for p in ("gate", "up")}
        shapes[pre + "mlp.down_proj.weight"] = (hidden, inter)
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    dst.mkdir(parents=True)
    infos = [TensorInfo(name, shape, torch.bfloat16) for name, shape in shapes.items()]
    gen = torch.Generator().manual_seed(seed)
    with ShardedWriter(dst, infos, 1 << 30) as writer:
        for info in infos:
            writer.write(info.name, torch.empty(info.shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=gen))
        writer.finalize()
    LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        dtype="bfloat16",
    ).save_pretrained(dst)
    for f in smol.iterdir():
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, dst / f.name)
    return dst


def throughput(smol: Path, gigabytes: float, experts: int, tmp: Path) -> tuple[float, float]:
    """Merge vs cp bytes/s on `experts` synthetic experts of `gigabytes` GB; return (merge/cp, RSS / one expert)."""
    import shutil

    first = synthetic_expert(smol, tmp / "x0", gigabytes, seed=0)
    folders = [first] + [Path(shutil.copytree(first, tmp / f"x{i}")) for i in range(1, experts)]
    expert_bytes = sum(f.stat().st_size for f in first.glob("*.safetensors"))
    total = read_into_cache(folders)
    t0 = time.perf_counter()
    for i, folder in enumerate(folders):
        subprocess.run(["cp", "-r", str(folder), str(tmp / f"cp{i}")], check=True)
        fsync_tree(tmp / f"cp{i}")
    t_cp = time.perf_counter() - t0
    for i in range(experts):
        shutil.rmtree(tmp / f"cp{i}")
    read_into_cache(folders)
    t_merge, rss = child(_STREAM_TIMED, "--experts", *map(str, folders), "--output-dir", str(tmp / "merged"))
    cp_rate, merge_rate = total / t_cp / 1e9, total / t_merge / 1e9
    print(
        f"throughput: {experts} experts x {expert_bytes / 1e9:.2f} GB: cp {t_cp:.1f} s ({cp_rate:.2f} GB/s), "
        f"merge {t_merge:.1f} s ({merge_rate:.2f} GB/s, peak RSS {rss:.0f} MiB = "
        f"{rss * 2**20 / expert_bytes:.2f} x one expert)"
    )
    return merge_rate / cp_rate, rss * 2**20 / expert_bytes


def perturbed_copy(src: Path, dst: Path, seed: int, scale: float = 0.01) -> Path:
    """Copy a dense checkpoint, adding seeded noise to every FFN weight (a distinct 'expert')."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    gen = torch.Generator().manual_seed(seed)
    for f in dst.glob("*.safetensors"):
        tensors = load_file(f)
        for k, v in tensors.items():
            if ".mlp." in k:
                tensors[k] = v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        save_file(tensors, f, metadata={"format": "pt"})
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=2000, help="max_shard_size_mb of the streamed merge")
    parser.add_argument("--throughput-gb", type=float, default=2.0, help="GB per synthetic expert (0: skip)")
    parser.add_argument("--tmp-dir", default=None, help="where the copies and merges go (default: the system temp)")
    args = parser.parse_args()
    from run_config.assets import smollm2_path
    from training.moe.safetensors_stream import CheckpointReader

    smol = smollm2_path()
    expert_mib = CheckpointReader(smol).nbytes / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        experts = [str(smol)] + [
            str(perturbed_copy(smol, Path(tmp) / f"e{i}", seed=i, scale=0.002)) for i in range(1, args.experts)
        ]
        _, base_rss = child(_BASELINE)
        t_stream, stream_rss = child(
            _STREAM, "--experts", *experts, "--output-dir", f"{tmp}/stream", "--max-shard-size-mb", str(args.shard_mb)
        )
        t_naive, naive_rss = child(_NAIVE, *experts, f"{tmp}/naive.safetensors")
    rows = {
        "expert weights (MiB)": expert_mib,
        "interpreter baseline RSS (MiB)": base_rss,
        "streamed merge peak RSS (MiB)": stream_rss,
        "naive merge peak RSS (MiB)": naive_rss,
        "streamed seconds": t_stream,
        "naive seconds": t_naive,
    }
    print(json.dumps({k: round(v, 1) for k, v in rows.items()}, indent=2))
    print(
        f"streamed: {stream_rss / expert_mib:.2f} x one expert ({(stream_rss - base_rss) / expert_mib:.2f} x above "
        f"the interpreter); naive: {naive_rss / expert_mib:.2f} x; streamed/naive = {stream_rss / naive_rss:.2f}"
    )
    rss_ratio = stream_rss / expert_mib
    if args.throughput_gb > 0:
        with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
            speed, big_rss = throughput(smol, args.throughput_gb, args.experts, Path(tmp))
        print(f"throughput_ratio={speed:.2f} goal={THROUGHPUT_GOAL}")
        rss_ratio = max(rss_ratio, big_rss)
    print(f"ratio={rss_ratio:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
