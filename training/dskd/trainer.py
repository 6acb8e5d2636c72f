"""DSKD training loop: teacher -> student with CE, KL(teacher||student) and L_sem; perplexity on the valid split."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from dataset.lexicon import resolve_asset
from dataset.records import load_records
from run_config.devices import resolve_device
from run_config.runtime import (
    atomic_open,
    clear_manifest,
    inputs_fingerprint,
    is_finished,
    set_seed,
    staged_dir,
    write_json,
    write_manifest,
)
from training.data import IGNORE_INDEX, pad_batch
from training.dskd.config import DSKDConfig, input_path
from training.dskd.examples import collate, encode_records
from training.dskd.loss import SenseBank, ce_loss, kl_loss, semantic_loss
from training.dskd.margin import antonym_distances, margin_report
from training.dskd.relations import build_relations
from training.dskd.senses import SenseDictionary, build_sense_dictionary
from training.dskd.student import build_student, load_teacher

log = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
STUDENT_DIR = "student"
PROJECTION_FILE = "projection.safetensors"


def compute_losses(
    batch: dict[str, torch.Tensor],
    student: Any,
    teacher: Any,
    projection: torch.nn.Module | None,
    bank: SenseBank | None,
    cfg: DSKDConfig,
) -> dict[str, torch.Tensor]:
    """Return the loss terms of one batch under `cfg.objective`; `loss` is the total to minimise."""
    device = next(student.parameters()).device
    ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    selected = labels[:, 1:] != IGNORE_INDEX
    s_hidden = student.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    s_logits = student.get_output_embeddings()(s_hidden[:, :-1][selected])
    terms = {"ce": ce_loss(s_logits, labels[:, 1:][selected])}
    total = terms["ce"]
    if cfg.objective != "ce":
        with torch.no_grad():
            t_hidden = teacher.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            t_logits = teacher.get_output_embeddings()(t_hidden[:, :-1][selected])
        terms["kl"] = kl_loss(s_logits, t_logits, cfg.kl_temperature)
        total = total + cfg.alpha * terms["kl"]
    if cfg.objective == "dskd":
        b, t, w = batch["sem"].to(device).unbind(1)
        n_t = s_hidden[b, t]
        if projection is not None:
            n_t = projection(n_t.to(projection.weight.dtype))
        if cfg.gamma is None:
            raise ValueError("gamma is none: calibrate it first (training.dskd.margin) and pass a config that has it")
        pull, push, active = semantic_loss(n_t, t_hidden[b, t], w, bank, cfg.kappa, cfg.gamma)
        terms.update(sem_pull=pull, sem_push=push, sem_push_active=active, sem=cfg.beta_p * pull + cfg.beta_n * push)
        total = total + terms["sem"]
    terms["loss"] = total
    return terms


@torch.no_grad()
def example_nll(model: Any, examples: list[dict], batch_size: int, pad_token_id: int) -> list[tuple[float, int]]:
    """Per example, (summed NLL, tokens) of its definition (prompt masked), in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for i in tqdm(range(0, len(examples), batch_size), desc="perplexity", unit=" batches", disable=None):
        batch = pad_batch(examples[i : i + batch_size], pad_token_id)
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        ).sum(1)
        out += zip(nll.tolist(), (targets != IGNORE_INDEX).sum(1).tolist())
    model.train(was_training)
    return out


def evaluate_perplexity(model: Any, examples: list[dict], batch_size: int, pad_token_id: int) -> dict[str, float]:
    """Token-level perplexity of the definitions (prompt masked) of `examples`."""
    per_example = example_nll(model, examples, batch_size, pad_token_id)
    tokens = sum(n for _, n in per_example)
    loss = sum(nll for nll, _ in per_example) / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens}


def _micro_batches(examples: list[dict], batch_size: int, seed: int) -> Iterator[list[dict]]:
    """Endless shuffled micro-batches, a new order every epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            yield [examples[j] for j in order[i : i + batch_size]]


def total_steps(cfg: DSKDConfig, n_examples: int) -> int:
    """Optimizer steps of the run: `max_steps`, else `num_epochs` passes."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_epoch = math.ceil(n_examples / cfg.per_device_train_batch_size)
    return max(1, math.ceil(cfg.num_epochs * per_epoch / cfg.gradient_accumulation_steps))


def train_loop(
    cfg: DSKDConfig,
    student: Any,
    teacher: Any,
    projection: torch.nn.Module | None,
    bank: SenseBank | None,
    examples: list[dict],
    pad_token_id: int,
    log_path: Path | None = None,
) -> list[dict]:
    """Train the student's trainable parameters; return one log row per `logging_steps` steps."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in student.parameters() if p.requires_grad]
    params += list(projection.parameters()) if projection is not None else []
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = total_steps(cfg, len(examples))
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_rate * steps), steps)
    batches = _micro_batches(examples, cfg.per_device_train_batch_size, cfg.seed)
    history: list[dict] = []
    window: dict[str, list[float]] = defaultdict(list)
    with atomic_open(log_path) if log_path is not None else contextlib.nullcontext() as f:
        for step in tqdm(range(1, steps + 1), desc=f"train ({cfg.objective})", unit=" steps", disable=None):
            for _ in range(cfg.gradient_accumulation_steps):
                terms = compute_losses(collate(next(batches), pad_token_id), student, teacher, projection, bank, cfg)
                (terms["loss"] / cfg.gradient_accumulation_steps).backward()
                for name, value in terms.items():
                    window[name].append(value.item())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % cfg.logging_steps == 0 or step == steps:
                row = {
                    "step": step,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    **{k: sum(v) / len(v) for k, v in window.items()},
                }
                history.append(row)
                window.clear()
                log.info(
                    "step %d/%d %s", step, steps, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step",))
                )
                if f is not None:
                    f.write(json.dumps(row) + "\n")
    return history


def save_student(out_dir: Path, student: Any, tokenizer: Any, projection: torch.nn.Module | None) -> None:
    """Write the student (HF folder, plus the projection when there is one) atomically as `out_dir`."""
    with staged_dir(out_dir) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if projection is not None:
            save_file({"weight": projection.weight.detach().cpu().contiguous()}, str(tmp / PROJECTION_FILE))


def is_up_to_date(cfg: DSKDConfig) -> bool:
    """True when `output_dir` holds a finished run of this exact config and these inputs."""
    return is_finished(
        cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg, resolve_asset), marker=f"{STUDENT_DIR}/config.json"
    )


def prepare_senses(
    cfg: DSKDConfig, teacher: Any, tokenizer: Any, teacher_name: str, device: torch.device
) -> tuple[SenseDictionary, SenseBank]:
    """Build or reuse the sense dictionary, derive the relations among its words, return both as a bank."""
    senses = build_sense_dictionary(cfg, teacher, tokenizer, teacher_name, device)
    relations = build_relations(senses.words, cfg.use_wordnet, cfg.negation_prefixes, cfg.negation_suffixes)
    relations.save(Path(cfg.output_dir))
    log.info("relations among %d words: %s", len(senses), relations.pair_counts())
    return senses, SenseBank.build(senses, relations).to(device)


def resolve_margin(cfg: DSKDConfig, teacher: Any, examples: list[dict], bank: SenseBank, pad_id: int) -> dict:
    """The hinge margin for training (`gamma`, else calibrated) with the teacher's antonym distances."""
    distances, positions = antonym_distances(
        teacher, examples, bank, cfg.kappa, cfg.per_device_eval_batch_size, pad_id, cfg.gamma_samples
    )
    margin = margin_report(distances, positions, cfg.gamma, cfg.gamma_quantile)
    if not positions:
        log.warning("no training position has a word with antonym senses: the push term of L_sem stays 0")
    log.info("gamma = %.4g (%s; %d antonym pairs measured)", margin["gamma"], margin["source"], margin["pairs"])
    return margin


def run(cfg: DSKDConfig, senses_only: bool = False) -> dict:
    """Run the whole objective: senses (dskd), training, validation perplexity, saved student, manifest."""
    device = torch.device(resolve_device(cfg.device))  # a device this machine lacks is refused first
    set_seed(cfg.seed)
    from transformers import AutoTokenizer

    out = Path(cfg.output_dir)
    train_path = input_path(cfg.data_path_train)
    valid_path = input_path(cfg.data_path_valid) if cfg.data_path_valid else None
    clear_manifest(out)
    teacher_path = resolve_asset(cfg.teacher_model)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    teacher = load_teacher(teacher_path, cfg.dtype, device)
    senses, bank = (
        prepare_senses(cfg, teacher, tokenizer, cfg.teacher_model, device)
        if cfg.objective == "dskd" or senses_only
        else (None, None)
    )
    if senses_only:
        return {"sense_words": len(senses), "senses": int(senses.vectors.shape[0])}
    student_path = resolve_asset(cfg.student_model) if cfg.student_model else None
    student, projection = build_student(cfg, teacher_path, student_path, teacher, device)
    records = load_records(train_path)[: cfg.max_train_samples]
    examples, dropped = encode_records(records, tokenizer, cfg.cutoff_len, senses if bank is not None else None)
    log.info("training on %d examples (%d dropped: prompt longer than cutoff_len)", len(examples), dropped)
    metrics: dict[str, Any] = {"train_examples": len(examples), "train_dropped": dropped}
    train_cfg = cfg
    if bank is not None:
        metrics["margin"] = resolve_margin(cfg, teacher, examples, bank, pad_id)
        train_cfg = cfg.model_copy(update={"gamma": metrics["margin"]["gamma"]})
    history = train_loop(train_cfg, student, teacher, projection, bank, examples, pad_id, out / LOG_FILE)
    metrics["final"] = history[-1]
    if valid_path is not None:
        valid = load_records(valid_path)[: cfg.max_eval_samples]
        valid_examples, valid_dropped = encode_records(valid, tokenizer, cfg.cutoff_len)
        metrics["valid"] = {
            **evaluate_perplexity(student, valid_examples, cfg.per_device_eval_batch_size, pad_id),
            "examples": len(valid_examples),
            "dropped": valid_dropped,
        }
    save_student(out / STUDENT_DIR, student, tokenizer, projection)
    write_json(out / METRICS_FILE, metrics)
    write_manifest(out, "train-dskd", cfg, inputs=inputs_fingerprint(cfg, resolve_asset), metrics=metrics)
    return metrics
