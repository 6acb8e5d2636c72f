"""Finetune-router stage: train ONLY the router of a merged MoE (Table 12: 1 epoch, lr 1e-6).

Token and sequence policies train every layer's `mlp.gate.weight` on the definition loss (plus the
Switch/Mixtral load-balancing loss for token routing) with the HF Trainer, as `train` does: under
`--deepspeed run_config/ds_zero3.json` and the `deepspeed` launcher the MoE is partitioned over the ranks.
Every other tensor is frozen by name and the trainable-parameter count is asserted, on ZeRO-3's partitioned
parameters too (the original froze nothing: bug 3). The learned-domain policy trains the domain classifier
from the cluster labels in one process and reports its agreement with centroid routing.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dataset.records import Record, load_records
from run_config.cli import config_from_args, run_main, skip_finished, stage_parser
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError, DataError
from run_config.runtime import inputs_fingerprint, is_finished, set_seed, staged_dir, write_manifest
from training.data import IGNORE_INDEX, encode_records, pad_batch, pad_token_id
from training.deepspeed_config import init_zero3, prepare_deepspeed, zero_stage
from training.moe.checkpoint import (
    carry_clusters,
    carry_projection_routers,
    config_num_experts,
    read_routing,
    save_classifier,
    write_routing,
)
from training.moe.config import FinetuneRouterConfig
from training.moe.routing import DomainClassifier, RoutedMoE, load_routed_moe
from training.trainer_args import precision_flags

log = logging.getLogger(__name__)


def parameter_count(p: torch.nn.Parameter) -> int:
    """Elements of `p`, also when ZeRO-3 holds only a partition of it (then `ds_numel` is its full size)."""
    return int(getattr(p, "ds_numel", p.numel()))


def freeze_all_but_router(moe: RoutedMoE) -> list[torch.nn.Parameter]:
    """Freeze every parameter, unfreeze the routers (`*.mlp.gate.weight`) by name; assert the trainable count."""
    for p in moe.model.parameters():
        p.requires_grad_(False)
    params = moe.router_parameters()
    for p in params.values():
        p.requires_grad_(True)
    cfg = moe.model.config
    expected = cfg.num_hidden_layers * config_num_experts(cfg) * cfg.hidden_size
    trainable = sum(parameter_count(p) for p in moe.model.parameters() if p.requires_grad)
    if trainable != expected or len(params) != cfg.num_hidden_layers:
        raise AssertionError(
            f"{trainable} trainable parameters in {len(params)} tensors, expected {expected} "
            f"in {cfg.num_hidden_layers} (router only)"
        )
    return list(params.values())


def trainer_dir(cfg: FinetuneRouterConfig) -> Path:
    """The Trainer's scratch folder beside output_dir (nothing is checkpointed; removed at the end)."""
    out = Path(cfg.output_dir)
    return out.parent / f".{out.name}.trainer"


def build_training_args(cfg: FinetuneRouterConfig, ds_config: dict[str, Any] | None, gpu: bool, validate: bool) -> Any:
    """TrainingArguments of the router run: Table 12's optimizer and cosine schedule from the run config."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(trainer_dir(cfg)),
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=cfg.num_epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # < 1: a share of the updates
        weight_decay=cfg.weight_decay,
        adam_beta1=0.9,
        adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        gradient_checkpointing=cfg.gradient_checkpointing,
        eval_strategy="no",
        eval_on_start=validate,
        save_strategy="no",
        prediction_loss_only=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        disable_tqdm=None,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not gpu,
        deepspeed=ds_config,
        **precision_flags(cfg.precision, gpu),
    )


def _make_trainer_class(moe: RoutedMoE) -> type:
    from transformers import Trainer

    class RouterTrainer(Trainer):
        """Trainer whose loss is `moe`'s: sequence policies pool over the prompt, token routing adds the
        load-balancing loss in training (validation reports the definition loss alone)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # mean loss per micro-batch, divided by the accumulation
            self.aux_losses: list[float] = []

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, **_: Any) -> Any:
            moe.start_batch((inputs["labels"] == IGNORE_INDEX) & inputs["attention_mask"].bool())
            out = model(**inputs, output_router_logits=moe.policy == "token" and model.training)
            if getattr(out, "aux_loss", None) is not None:
                self.aux_losses.append(float(out.aux_loss.detach()))
            return (out.loss, out) if return_outputs else out.loss

    return RouterTrainer


def load_dtype(cfg: FinetuneRouterConfig, device: str, deepspeed: bool) -> torch.dtype:
    """The dtype the MoE loads in. Under DeepSpeed the weights run in the precision's dtype (ZeRO-3 casts
    them while partitioning), so `dtype` may only name that one."""
    if not deepspeed:
        return resolve_dtype(cfg.dtype, device)
    flags = precision_flags(cfg.precision, device.startswith("cuda"))
    dtype = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else torch.float32
    if cfg.dtype not in ("auto", str(dtype).removeprefix("torch.")):
        raise ConfigError(
            f"dtype {cfg.dtype} with deepspeed: DeepSpeed runs the weights in {str(dtype).removeprefix('torch.')} "
            f"(precision {cfg.precision} on {device}); give dtype auto"
        )
    return dtype


def master_weights(params: list[torch.nn.Parameter], mixed: bool) -> torch.dtype:
    """Without DeepSpeed, keep the routers in float32 under mixed precision (autocast bridges the dtypes;
    updates of lr 1e-6 vanish in bfloat16); return their load dtype, in which they are saved."""
    dtype = params[0].dtype
    if dtype == torch.float32:
        return dtype
    if not mixed:
        log.warning(
            "routers train in %s without mixed precision (small updates round away): use dtype float32 here",
            str(dtype).removeprefix("torch."),
        )
        return dtype
    for p in params:
        p.data = p.data.float()
    return dtype


def register_expert_weights(moe: RoutedMoE) -> None:
    """ZeRO-3 gathers a module's own parameters when it runs; sequence policies read the experts' weights in
    their MoE block's forward, so each block gathers its experts' weights too (external parameters)."""
    from deepspeed.runtime.zero import register_external_parameter

    for block in moe.blocks:
        for p in block.experts.parameters():
            register_external_parameter(block, p)


def train_router(
    moe: RoutedMoE, cfg: FinetuneRouterConfig, train: list[dict], valid: list[dict], args: Any
) -> tuple[dict[str, Any], Any]:
    """Train the router parameters with the HF Trainer (under DeepSpeed when `args.deepspeed`); return the
    losses and the trainer (under ZeRO-3 the export gathers through it)."""
    params = freeze_all_but_router(moe)
    trainable = sum(parameter_count(p) for p in params)
    moe.model.router_aux_loss_coef = cfg.aux_loss_coef
    stage = zero_stage(args.deepspeed) if args.deepspeed else 0
    dtype = master_weights(params, args.bf16 or args.fp16) if not args.deepspeed else params[0].dtype
    if stage == 3:
        register_expert_weights(moe)
    trainer = _make_trainer_class(moe)(
        model=moe.model,
        args=args,
        train_dataset=train,
        eval_dataset=valid or None,
        data_collator=functools.partial(pad_batch, pad_token_id=pad_token_id(moe.tokenizer)),
    )
    result = trainer.train()
    after = trainer.evaluate()["eval_loss"] if valid else None
    for p in params:
        p.data = p.data.to(dtype)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    world = args.world_size
    info = {
        "steps": trainer.state.global_step,
        "updates": cfg.num_epochs
        * math.ceil(math.ceil(len(train) / (cfg.batch_size * world)) / cfg.gradient_accumulation_steps),
        "world_size": world,
        "zero_stage": stage,
        "trainable_parameters": trainable,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "train_loss": result.metrics["train_loss"],
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "valid_loss_before": evals[0] if valid else None,
        "valid_loss_after": after,
    }
    if trainer.aux_losses:
        info["aux_loss_first"], info["aux_loss_last"] = trainer.aux_losses[0], trainer.aux_losses[-1]
    return info, trainer


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


def _save(moe: RoutedMoE, cfg: FinetuneRouterConfig, info: dict[str, Any], state_dict: dict | None = None) -> None:
    """Write the finetuned MoE folder (`state_dict`: ZeRO-3's gathered weights; None: the model's own)."""
    with staged_dir(cfg.output_dir) as tmp:
        moe.model.save_pretrained(str(tmp), state_dict=state_dict)
        moe.tokenizer.save_pretrained(str(tmp))
        routing = {**moe.routing, "policy": moe.policy, "top_k": moe.top_k}
        carry_clusters(moe.path, tmp)
        carry_projection_routers(moe.path, tmp)
        if moe.classifier is not None:
            routing["domain_classifier"] = save_classifier(tmp, moe.classifier.state_dict(), moe.classifier.layer, info)
        routing["router_finetune"] = info
        write_routing(tmp, routing)
        write_manifest(tmp, "finetune-router", cfg, inputs=inputs_fingerprint(cfg), **info)


def _learned_domain(cfg: FinetuneRouterConfig, device: str, train: list[Record], valid: list[Record]) -> dict:
    if cfg.deepspeed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("policy learned-domain trains its classifier in one process: drop deepspeed and the launcher")
    moe = load_routed_moe(cfg.moe_dir, "learned-domain", device, resolve_dtype(cfg.dtype, device), cfg.top_k)
    labels = _centroid_labels(moe, train)
    info = train_domain_classifier(moe, [(r.term, r.context) for r in train], labels, cfg)
    if valid:
        info["valid_agreement"] = agreement(moe, [(r.term, r.context) for r in valid], _centroid_labels(moe, valid))
    info = {"policy": moe.policy, **info}
    _save(moe, cfg, info)
    return info


def finetune_router(cfg: FinetuneRouterConfig) -> dict[str, Any]:
    """Run the stage (on every rank under a launcher; rank 0 writes); return what was trained and measured."""
    device = resolve_device(cfg.device)  # a device this machine lacks is refused before any work
    gpu = device.startswith("cuda")
    dtype = load_dtype(cfg, device, bool(cfg.deepspeed))
    set_seed(cfg.seed)
    train_records = _read(cfg.train_file, cfg.max_records)
    valid_records = _read(cfg.valid_file, cfg.max_records) if cfg.valid_file else []
    policy = cfg.policy or read_routing(cfg.moe_dir)["policy"]
    if policy == "learned-domain":
        return _learned_domain(cfg, device, train_records, valid_records)
    ds_config = prepare_deepspeed(cfg.deepspeed, gpu)
    args = build_training_args(cfg, ds_config, gpu, bool(valid_records))
    init_zero3(ds_config, gpu)  # ZeRO-3: the MoE is partitioned while it loads, never whole on one rank
    zero3 = zero_stage(ds_config) == 3
    moe = load_routed_moe(cfg.moe_dir, policy, None if zero3 else str(args.device), dtype, cfg.top_k)
    train = encode_records(moe.tokenizer, train_records, cfg.cutoff_len)
    valid = encode_records(moe.tokenizer, valid_records, cfg.cutoff_len)
    log.info("router data: train %s, valid %s", train.summary(), valid.summary())
    info, trainer = train_router(moe, cfg, train.examples, valid.examples, args)
    info = {"policy": moe.policy, **info}
    state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed) if zero3 else None  # every rank gathers
    if trainer.is_world_process_zero():
        _save(moe, cfg, info, state_dict)
        shutil.rmtree(trainer_dir(cfg), ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
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
