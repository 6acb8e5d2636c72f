"""Benchmark MoE generation speed: domain routing vs the dense single expert, and token top-2, same prompts.

Merges 4 SmolLM2-135M experts (copies: speed does not depend on the weights' values), then generates greedily a fixed
number of tokens for the same real WordNet prompts with (a) the dense expert, (b) the MoE under domain routing
to that expert (one expert computed per token) and (c) the MoE under token top-2 routing, interleaved
prompt by prompt in a rotating order so machine load hits all three alike. Goal: domain tokens/s >= 0.9 x dense.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    from dataset.lexicon import wordnet_lexicon_dir
    from dataset.records import load_records
    from prompts.builder import build_prompt
    from run_config.assets import smollm2_path
    from training.moe.config import MergeConfig
    from training.moe.merge import merge
    from training.moe.routing import load_routed_moe

    smol = smollm2_path()
    records = load_records(wordnet_lexicon_dir() / "test.jsonl")[::97][: args.prompts]
    with tempfile.TemporaryDirectory() as tmp:
        merge(MergeConfig(experts=[str(smol)] * 4, output_dir=f"{tmp}/moe"))
        dense = AutoModelForCausalLM.from_pretrained(str(smol)).to(args.device).eval()
        moe = load_routed_moe(f"{tmp}/moe", policy="domain", device=args.device, top_k=2)
        tok = moe.tokenizer
        gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
        seconds = {"dense": 0.0, "domain": 0.0, "token-top2": 0.0}

        def timed(name: str, fn) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - t0

        with torch.no_grad():
            for i, r in enumerate([records[0]] + records):  # first prompt = warm-up, not counted
                ids = tok(
                    build_prompt(r.term, r.context, bos_token=tok.bos_token or ""),
                    add_special_tokens=False,
                    return_tensors="pt",
                ).input_ids.to(args.device)
                before = dict(seconds)
                runs = [
                    ("dense", "", lambda: dense.generate(input_ids=ids, **gen)),
                    ("domain", "domain", lambda: moe.generate(input_ids=ids, **gen)),
                    ("token-top2", "token", lambda: moe.generate(input_ids=ids, **gen)),
                ]
                for name, policy, fn in runs[i % 3 :] + runs[: i % 3]:  # rotate the order: load hits all alike
                    if policy:
                        moe.set_policy(policy)
                    with moe.only_expert(2) if policy == "domain" else contextlib.nullcontext():
                        timed(name, fn)
                if i == 0:
                    seconds.update(before)
                print(f"prompt {i}: " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()), file=sys.stderr)
    tokens = len(records) * args.new_tokens
    speed = {k: tokens / v for k, v in seconds.items()}
    for k, v in speed.items():
        print(f"{k:>11}: {v:7.1f} tokens/s ({tokens} tokens, {len(records)} prompts, {args.device})")
    print(f"token top-2 / dense = {speed['token-top2'] / speed['dense']:.2f}")
    print(f"ratio={speed['domain'] / speed['dense']:.2f} goal={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
