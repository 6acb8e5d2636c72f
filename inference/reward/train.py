"""Train-reward stage: the outcome reward model for Best-of-N (Bradley-Terry, gold preferred over samples).

1. Mine negatives: the policy samples `samples_per_prompt` answers per training/held-out record; the
   `negatives_per_prompt` most likely distinct non-gold ones are kept (`pairs_{train,valid}.jsonl`,
   reused by a rerun with the same mining settings).
2. Train a scalar-head LM on -log sigmoid(r(x, gold) - r(x, sample)); report pairwise accuracy on
   the held-out pairs before and after; save an HF checkpoint to `model/`, then `metrics.json` and
   `manifest.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dataset.predictions import write_rows
from dataset.records import Record, load_records
from inference.reward.config import RewardConfig
from inference.reward.model import (
    Pair,
    RewardScorer,
    bradley_terry_loss,
    compute_rewards,
    freeze_below_top_layers,
    load_reward_model,
    mine_negatives,
    pairwise_accuracy,
)
from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import DataError
from run_config.runtime import (
    clear_manifest,
    inputs_fingerprint,
    is_finished,
    set_seed,
    staged_dir,
    write_json,
    write_manifest,
)

log = logging.getLogger(__name__)
MINING_KEYS = (
    "train",
    "valid",
    "policy_model",
    "dtype",
    "samples_per_prompt",
    "negatives_per_prompt",
    "max_train_prompts",
    "max_valid_prompts",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "max_new_tokens",
    "seed",
)


def _subset(records: list[Record], n: int | None, seed: int) -> list[Record]:
    if n is None or n >= len(records):
        return records
    return [records[i] for i in sorted(random.Random(seed).sample(range(len(records)), n))]


def mine_pairs(cfg: RewardConfig, out: Path) -> tuple[list[Pair], list[Pair]]:
    """Mine (or reuse) the train and held-out preference pairs."""
    meta = {k: getattr(cfg, k) for k in MINING_KEYS}
    meta_path = out / "pairs_meta.json"
    paths = [out / "pairs_train.jsonl", out / "pairs_valid.jsonl"]
    if not cfg.force and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return read_pairs(paths[0]), read_pairs(paths[1])
    from inference.local import LocalBackend

    backend = LocalBackend.from_path(
        cfg.policy_model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.generate_batch_size
    )
    sampling = cfg.sampling(cfg.seed)
    result = []
    for split, path, limit in (
        ("train", cfg.train, cfg.max_train_prompts),
        ("valid", cfg.valid, cfg.max_valid_prompts),
    ):
        records = _subset(load_records(path), limit, cfg.seed)
        log.info("mining %d x %d samples from %s (%s)", len(records), cfg.samples_per_prompt, cfg.policy_model, split)
        pairs = mine_negatives(backend, records, sampling, cfg.samples_per_prompt, cfg.negatives_per_prompt)
        if not pairs:
            raise DataError(path, None, None, "no preference pair: every sample equals the gold definition")
        result.append(pairs)
    for path, pairs in zip(paths, result):
        write_rows(path, (p.as_dict() for p in pairs))
    write_json(meta_path, meta)
    del backend
    return result[0], result[1]


def read_pairs(path: Path) -> list[Pair]:
    """Read mined pairs back."""
    return [Pair(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_reward_model(cfg: RewardConfig, train: list[Pair], valid: list[Pair], device: str) -> tuple[Any, Any, dict]:
    """Bradley-Terry training; returns (model, tokenizer, metrics)."""
    model, tokenizer = load_reward_model(cfg.base_model or cfg.policy_model, device, resolve_dtype(cfg.dtype, device))
    trainable = sum(p.numel() for p in model.parameters())
    if cfg.trainable_top_layers is not None:
        trainable = freeze_below_top_layers(model, cfg.trainable_top_layers)
    scorer = RewardScorer(model, tokenizer)
    metrics: dict[str, Any] = {
        "train_pairs": len(train),
        "valid_pairs": len(valid),
        "trainable_parameters": trainable,
        "valid_accuracy_before": pairwise_accuracy(scorer, valid),
        "loss": [],
    }
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        betas=(0.9, 0.95),
    )
    rng = random.Random(cfg.seed)
    steps = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    with tqdm(total=steps * cfg.epochs, desc="train-reward", unit=" steps", disable=None) as bar:
        for _ in range(cfg.epochs):
            order = list(range(len(train)))
            rng.shuffle(order)
            model.train()
            for start in range(0, len(order), cfg.batch_size):
                batch = [train[i] for i in order[start : start + cfg.batch_size]]
                rewards = compute_rewards(
                    model,
                    tokenizer,
                    [(p.term, p.context, p.chosen) for p in batch] + [(p.term, p.context, p.rejected) for p in batch],
                )
                loss = bradley_terry_loss(rewards[: len(batch)], rewards[len(batch) :])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                metrics["loss"].append(round(loss.item(), 6))
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    metrics["valid_accuracy"] = pairwise_accuracy(scorer, valid)
    return model, tokenizer, metrics


def run(cfg: RewardConfig) -> dict[str, Any]:
    """Run the stage; return the metrics."""
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    device = resolve_device(cfg.device)
    clear_manifest(out)
    train, valid = mine_pairs(cfg, out)
    model, tokenizer, metrics = train_reward_model(cfg, train, valid, device)
    with staged_dir(out / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    write_json(out / "metrics.json", metrics)
    write_manifest(out, "train-reward", cfg, inputs=inputs_fingerprint(cfg), valid_accuracy=metrics["valid_accuracy"])
    return metrics


def is_up_to_date(cfg: RewardConfig) -> bool:
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg), marker="model/config.json")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("train-reward", __doc__, RewardConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, RewardConfig)
    if skip_finished("train-reward", cfg, is_up_to_date):
        return 0
    metrics = run(cfg)
    print(
        f"train-reward: {metrics['train_pairs']} pairs, held-out pairwise accuracy "
        f"{metrics['valid_accuracy_before']:.3f} -> {metrics['valid_accuracy']:.3f}; "
        f"model in {Path(cfg.output_dir) / 'model'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
