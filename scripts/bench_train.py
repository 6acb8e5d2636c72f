"""Benchmark one training step of SmolLM2-135M: dynamic padding (training.data.pad_batch) vs fixed 128.

Real Urban rows from the 3D-EX sample are encoded once (cutoff 128); the same batches then run
forward + backward + AdamW step with each padding, alternating, after one warm-up step each.
Throughput counts real (attention-1) tokens per second; the ratio is dynamic / fixed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import torch
import torch.nn.functional as F

from dataset.readers import iter_3dex_csv
from dataset.records import Record
from run_config.assets import smollm2_path
from scripts.bench_data import add_urban_option, urban_csv
from training.data import IGNORE_INDEX, encode_records, pad_batch, pad_token_id

GOAL = 1.3
FIXED_LEN = 128


def fixed_batch(batch: dict[str, torch.Tensor], pid: int, width: int = FIXED_LEN) -> dict[str, torch.Tensor]:
    """The same batch right-padded to `width` (what padding="max_length" gives)."""
    extra = width - batch["input_ids"].shape[1]
    return {
        "input_ids": F.pad(batch["input_ids"], (0, extra), value=pid),
        "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0),
        "labels": F.pad(batch["labels"], (0, extra), value=IGNORE_INDEX),
    }


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    t0 = time.perf_counter()
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_urban_option(parser, "--data")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per padding")
    args = parser.parse_args()
    args.data = str(urban_csv(parser, "--data", args.data))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    items = (it for _, it in iter_3dex_csv(args.data))
    records = list(itertools.islice((it for it in items if isinstance(it, Record)), args.batch_size * (args.steps + 1)))
    enc = encode_records(tok, records, FIXED_LEN)
    pid = pad_token_id(tok)
    batches = [
        pad_batch(enc.examples[i : i + args.batch_size], pid) for i in range(0, len(enc.examples), args.batch_size)
    ]
    times = {"dynamic": 0.0, "fixed": 0.0}
    tokens = 0
    for k, batch in enumerate(batches):
        for name, b in (("dynamic", batch), ("fixed", fixed_batch(batch, pid))):
            seconds = step(model, opt, b)
            if k > 0:  # the first batch warms up both paths
                times[name] += seconds
        if k > 0:
            tokens += int(batch["attention_mask"].sum())
    widths = [b["input_ids"].shape[1] for b in batches[1:]]
    dyn, fix = tokens / times["dynamic"], tokens / times["fixed"]
    print(
        f"SmolLM2-135M, {len(batches) - 1} steps x batch {args.batch_size}, real tokens {tokens}, "
        f"dynamic widths {widths} vs fixed {FIXED_LEN}, {torch.get_num_threads()} threads"
    )
    print(f"dynamic padding: {dyn:.1f} tokens/s   fixed padding to {FIXED_LEN}: {fix:.1f} tokens/s")
    print(f"ratio={dyn / fix:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
