"""Finetune-router stage: train ONLY the router of a merged MoE (Table 12: 1 epoch, lr 1e-6).

Token and sequence policies train every layer's `mlp.gate.weight` on the definition loss (plus the
Switch/Mixtral load-balancing loss for token routing); every other tensor is frozen by name and the
trainable-parameter count is asserted (the original froze nothing: bug 3). The learned-domain policy
trains the domain classifier from the cluster labels and reports its agreement with centroid routing.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from dataset.records import Record, load_records
from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.errors import ConfigError, DataError
from run_config.runtime import inputs_fingerprint, is_finished, set_seed, staged_dir, write_manifest
from training.data import IGNORE_INDEX, encode_records, pad_batch
from training.moe.checkpoint import (
    carry_clusters,
    carry_projection_routers,
    config_num_experts,
    save_classifier,
    write_routing,
)
from training.moe.config import FinetuneRouterConfig
from training.moe.routing import DomainClassifier, RoutedMoE, load_routed_moe

log = logging.getLogger(__name__)


def freeze_all_but_router(moe: RoutedMoE) -> list[torch.nn.Parameter]:
    """Freeze every parameter, unfreeze the routers (`*.mlp.gate.weight`) by name; assert the trainable count."""
    for p in moe.model.parameters():
        p.requires_grad_(False)
    params = moe.router_parameters()
    for p in params.values():
        p.requires_grad_(True)
    cfg = moe.model.config
    expected = cfg.num_hidden_layers * config_num_experts(cfg) * cfg.hidden_size
    trainable = sum(p.numel() for p in moe.model.parameters() if p.requires_grad)
    if trainable != expected or len(params) != cfg.num_hidden_layers:
        raise AssertionError(
            f"{trainable} trainable parameters in {len(params)} tensors, expected {expected} "
            f"in {cfg.num_hidden_layers} (router only)"
        )
    return list(params.values())


def _step_loss(moe: RoutedMoE, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    prompt_mask = (batch["labels"] == IGNORE_INDEX) & batch["attention_mask"].bool()
    token = moe.policy == "token"
    out = moe.forward(pool_mask=prompt_mask, output_router_logits=token, **batch)
    return out.loss


def _batches(examples: list[dict], size: int, pad_id: int, device: str) -> list[dict[str, torch.Tensor]]:
    return [
        {k: v.to(device) for k, v in pad_batch(examples[i : i + size], pad_id).items()}
        for i in range(0, len(examples), size)
    ]


@torch.no_grad()
def evaluate_loss(moe: RoutedMoE, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean definition loss (without the auxiliary loss) over `batches`."""
    moe.model.eval()
    losses = [
        float(moe.forward(pool_mask=(b["labels"] == IGNORE_INDEX) & b["attention_mask"].bool(), **b).loss)
        for b in batches
    ]
    return sum(losses) / max(len(losses), 1)


def train_router(moe: RoutedMoE, cfg: FinetuneRouterConfig, train: list[dict], valid: list[dict]) -> dict[str, Any]:
    """Train the router parameters; return the losses."""
    from transformers import get_cosine_schedule_with_warmup

    params = freeze_all_but_router(moe)
    moe.model.router_aux_loss_coef = cfg.aux_loss_coef
    device = str(next(moe.model.parameters()).device)
    pad = moe.tokenizer.pad_token_id if moe.tokenizer.pad_token_id is not None else moe.tokenizer.eos_token_id
    valid_batches = _batches(valid, cfg.batch_size, pad, device)
    before = evaluate_loss(moe, valid_batches) if valid else None
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    updates = cfg.num_epochs * math.ceil(math.ceil(len(train) / cfg.batch_size) / cfg.gradient_accumulation_steps)
    sched = get_cosine_schedule_with_warmup(optim, int(cfg.warmup_ratio * updates), max(updates, 1))
    rng = random.Random(cfg.seed)
    losses = []
    moe.model.train()
    for _ in range(cfg.num_epochs):
        order = list(train)
        rng.shuffle(order)
        batches = _batches(order, cfg.batch_size, pad, device)
        for i, batch in enumerate(tqdm(batches, desc="router", unit=" batches", mininterval=1.0, disable=None)):
            loss = _step_loss(moe, batch)
            (loss / cfg.gradient_accumulation_steps).backward()
            losses.append(float(loss.detach()))
            if (i + 1) % cfg.gradient_accumulation_steps == 0 or i + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
    moe.model.eval()
    after = evaluate_loss(moe, valid_batches) if valid else None
    return {
        "steps": len(losses),
        "updates": updates,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "valid_loss_before": before,
        "valid_loss_after": after,
    }


def train_domain_classifier(
    moe: RoutedMoE, pairs: Sequence[tuple[str, str]], labels: Sequence[int], cfg: FinetuneRouterConfig
) -> dict[str, float]:
    """Fit the learned domain router on (prompt features, expert id); attach it to `moe`; return accuracy."""
    layer = cfg.classifier_layer if cfg.classifier_layer is not None else moe.model.config.num_hidden_layers // 2
    if not 0 <= layer <= moe.model.config.num_hidden_layers:
        raise ConfigError(f"classifier_layer must be in [0, {moe.model.config.num_hidden_layers}], got {layer}")
    feats = moe.prompt_features(pairs, layer)
    y = torch.tensor(list(labels), dtype=torch.long)
    gen = torch.Generator().manual_seed(cfg.seed)
    clf = DomainClassifier(feats.shape[1], moe.num_experts, layer)
    torch.nn.init.normal_(clf.linear.weight, std=0.02, generator=gen)
    torch.nn.init.zeros_(clf.linear.bias)
    optim = torch.optim.AdamW(clf.parameters(), lr=cfg.classifier_learning_rate, weight_decay=cfg.weight_decay)
    scale = math.sqrt(feats.shape[1])  # unit-norm features: put logits on a trainable scale
    for _ in range(cfg.classifier_epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(clf(feats[idx] * scale), y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    with torch.no_grad():
        clf.linear.weight.mul_(scale)
        acc = float((clf(feats).argmax(dim=-1) == y).float().mean())
    moe.classifier = clf
    return {"train_accuracy": acc, "train_examples": len(y), "layer": layer}


def agreement(moe: RoutedMoE, pairs: Sequence[tuple[str, str]], labels: Sequence[int]) -> float:
    """Share of `pairs` that the learned router sends where `labels` (centroid routing) does."""
    pred = moe.classify_domains(pairs)
    return sum(int(p == t) for p, t in zip(pred, labels, strict=True)) / max(len(labels), 1)


def _read(path: str, limit: int | None) -> list[Record]:
    records = load_records(path)[:limit]
    if not records:
        raise DataError(path, None, None, "no records")
    return records


def _centroid_labels(moe: RoutedMoE, records: list[Record]) -> list[int]:
    """Expert ids from the merged MoE's copy of the cluster centroids."""
    policy = moe.policy
    moe.set_policy("domain")
    try:
        return moe.domains_for([(r.term, r.context) for r in records])
    finally:
        moe.set_policy(policy)


def _save(moe: RoutedMoE, cfg: FinetuneRouterConfig, info: dict[str, Any]) -> None:
    with staged_dir(cfg.output_dir) as tmp:
        moe.model.save_pretrained(str(tmp))
        moe.tokenizer.save_pretrained(str(tmp))
        routing = {**moe.routing, "policy": moe.policy, "top_k": moe.top_k}
        carry_clusters(moe.path, tmp)
        carry_projection_routers(moe.path, tmp)
        if moe.classifier is not None:
            routing["domain_classifier"] = save_classifier(tmp, moe.classifier.state_dict(), moe.classifier.layer, info)
        routing["router_finetune"] = info
        write_routing(tmp, routing)
        write_manifest(tmp, "finetune-router", cfg, inputs=inputs_fingerprint(cfg), **info)


def finetune_router(cfg: FinetuneRouterConfig) -> dict[str, Any]:
    """Run the stage; return what was trained and measured."""
    set_seed(cfg.seed)
    train_records = _read(cfg.train_file, cfg.max_records)
    valid_records = _read(cfg.valid_file, cfg.max_records) if cfg.valid_file else []
    moe = load_routed_moe(cfg.moe_dir, policy=cfg.policy, top_k=cfg.top_k)
    if moe.policy == "learned-domain":
        labels = _centroid_labels(moe, train_records)
        info = train_domain_classifier(moe, [(r.term, r.context) for r in train_records], labels, cfg)
        if valid_records:
            info["valid_agreement"] = agreement(
                moe, [(r.term, r.context) for r in valid_records], _centroid_labels(moe, valid_records)
            )
    else:
        train = encode_records(moe.tokenizer, train_records, cfg.cutoff_len)
        valid = encode_records(moe.tokenizer, valid_records, cfg.cutoff_len)
        log.info("router data: train %s, valid %s", train.summary(), valid.summary())
        info = train_router(moe, cfg, train.examples, valid.examples)
    info = {"policy": moe.policy, **info}
    _save(moe, cfg, info)
    return info


def is_up_to_date(cfg: FinetuneRouterConfig) -> bool:
    return is_finished(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg))


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("finetune-router", __doc__, FinetuneRouterConfig)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, FinetuneRouterConfig)
    if skip_finished("finetune-router", cfg, is_up_to_date):
        return 0
    info = finetune_router(cfg)
    print(
        "finetune-router: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        + f" -> {cfg.output_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
