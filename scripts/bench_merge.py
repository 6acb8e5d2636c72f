"""Benchmark the MoE merge's memory: streamed merge vs a naive merge that loads every expert at once.

Four SmolLM2-135M experts (the model + 3 copies with perturbed FFNs) are merged twice, each in a fresh
child process that reports its own peak RSS: by `training.moe.merge` (safe_open one tensor at a time,
planned shards written tensor by tensor) and naively (from_pretrained x4, merged state dict in memory,
one save), like the original code. A third child only imports the same libraries (interpreter baseline).
The goal: streamed peak RSS <= 1.5 x one expert's weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.5

# VmHWM (peak RSS of this process image); ru_maxrss would carry the parent's peak across exec.
_REPORT = "print('RSS', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
_BASELINE = "import torch, transformers, safetensors, numpy\nfrom transformers import AutoModelForCausalLM\n" + _REPORT
_STREAM = "import sys\nfrom training.moe.merge import main\nrc = main(sys.argv[1:])\n" + _REPORT + "\nsys.exit(rc)"
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
    """Run `code` in a fresh interpreter; return (seconds, its peak RSS in MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rss = int(next(line for line in proc.stdout.splitlines() if line.startswith("RSS")).split()[1])
    return time.perf_counter() - t0, rss / 1024


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
    print(f"ratio={stream_rss / expert_mib:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
