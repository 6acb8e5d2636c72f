"""Finetune one causal LM for definition modeling with the HF Trainer (optionally under DeepSpeed).

Life cycle: read + tokenize the splits -> TrainingArguments (before the model: ZeRO-3) -> model ->
train with validation BLEU, early stopping and best-checkpoint reload -> export an HF folder
(safetensors + tokenizer, merged LoRA when used) -> summary -> manifest last.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dataset.records import Record, load_records
from evaluation.references import term_references
from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError, DataError
from run_config.runtime import (
    atomic_open,
    clear_manifest,
    config_hash,
    inputs_fingerprint,
    read_manifest,
    set_seed,
    swap_in,
    write_json,
    write_manifest,
)
from run_config.runtime import is_finished as is_finished_run
from training.data import EncodedSet, encode_records, pad_batch, pad_token_id
from training.deepspeed_config import init_zero3, prepare_deepspeed
from training.sft.config import TrainConfig
from training.sft.model import export_merged, load_model, load_tokenizer
from training.sft.validation import bleu_scores, generate_definitions, hold_out_terms, sample_records, shard
from training.trainer_args import precision_flags

log = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"
RUN_CONFIG_FILE = "run_config.json"
LOSS_SUM_FILE = "train_loss_sum.json"
TRAINER_STATE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
ADAPTER_DIR = "adapter"
BEST_METRIC = "bleu"


@dataclass(frozen=True)
class Plan:
    """Step arithmetic of one run, logged before training."""

    world_size: int
    gradient_accumulation_steps: int
    steps_per_epoch: int
    total_steps: int
    eval_steps: int


def plan_steps(cfg: TrainConfig, n_train: int, world_size: int) -> Plan:
    """Gradient accumulation (explicit, else from global_batch_size), total and validation steps."""
    micro = cfg.per_device_train_batch_size * world_size
    if cfg.gradient_accumulation_steps is not None:
        gas = cfg.gradient_accumulation_steps
    elif cfg.global_batch_size is not None:
        gas = max(cfg.global_batch_size // micro, 1)
        if gas * micro != cfg.global_batch_size:
            log.warning(
                "global_batch_size %d is not a multiple of %d (micro-batch x devices): using %d",
                cfg.global_batch_size,
                micro,
                gas * micro,
            )
    else:
        gas = 1
    steps_per_epoch = max(math.ceil(math.ceil(n_train / micro) / gas), 1)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    return Plan(world_size, gas, steps_per_epoch, total, max(total // cfg.eval_times, 1))


def on_gpu(cfg: TrainConfig) -> bool:
    """Whether this run trains on CUDA GPUs (`device` checked against the machine)."""
    return resolve_device(cfg.device).startswith("cuda")


def weights_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype the weights load (and the merged LoRA export saves) in."""
    return resolve_dtype(cfg.dtype, resolve_device(cfg.device))


def build_training_args(cfg: TrainConfig, plan: Plan, ds_config: dict[str, Any] | None) -> Any:
    """TrainingArguments from the run config: the one source of optimizer and schedule settings."""
    from transformers import TrainingArguments

    validate = cfg.do_validation
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        run_name=cfg.run_name or Path(cfg.output_dir).name,
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        optim=cfg.optim,
        max_grad_norm=cfg.max_grad_norm,
        gradient_checkpointing=cfg.gradient_checkpointing,
        eval_strategy="steps" if validate else "no",
        eval_steps=plan.eval_steps,
        save_strategy="steps",
        save_steps=plan.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=validate,
        metric_for_best_model=BEST_METRIC if validate else None,
        greater_is_better=True,
        prediction_loss_only=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_num_workers,
        use_cpu=resolve_device(cfg.device) == "cpu",
        deepspeed=ds_config,
        **precision_flags(cfg.precision, on_gpu(cfg)),
    )
    if cfg.lr_scheduler_type == "cosine_with_min_lr":
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": cfg.min_lr_rate}
    return TrainingArguments(**kwargs)


def read_split(path: str | None, name: str) -> list[Record]:
    """Records of one preprocessed split file; a missing or empty file is an error."""
    if path is None:
        raise ConfigError(f"{name}_file: missing (give a preprocessed {name} JSONL)")
    if not Path(path).is_file():
        raise DataError(path, None, None, "no such file")
    records = load_records(path)
    if not records:
        raise DataError(path, None, None, f"no records in the {name} split")
    return records


def check_valid_split(cfg: TrainConfig, records: list[Record]) -> list[str]:
    """Refuse test-split records in valid_file (it selects the model) unless allow_test_as_valid; return
    the warnings for the summary."""
    n = sum(r.split == "test" for r in records)
    if not n:
        return []
    what = f"{cfg.valid_file}: {n} of {len(records)} records are of the test split"
    if not cfg.allow_test_as_valid:
        raise ConfigError(
            f"{what}; valid_file selects the model (early stopping, best checkpoint), so give "
            "the valid split (or set allow_test_as_valid true)"
        )
    log.warning("%s: validating on test (allow_test_as_valid)", what)
    return [f"{what}: model selected on test (allow_test_as_valid)"]


def training_records(cfg: TrainConfig) -> tuple[list[Record], list[Record], dict[str, Any]]:
    """Train and valid records, before any model is loaded: valid_file (checked for test rows), or the
    seeded hold-out of the train rows when valid_holdout is set. Returns (train, valid, what was done)."""
    train_records = read_split(cfg.train_file, "train")[: cfg.max_train_samples]
    info: dict[str, Any] = {"valid_holdout": None, "warnings": []}
    if not cfg.do_validation:
        return train_records, [], info
    if cfg.valid_holdout is None:
        valid_records = read_split(cfg.valid_file, "valid")
        info["warnings"] = check_valid_split(cfg, valid_records)
        return train_records, valid_records, info
    try:
        train_records, valid_records = hold_out_terms(train_records, cfg.valid_holdout, cfg.seed)
    except ValueError as e:
        raise DataError(str(cfg.train_file), None, "term", f"valid_holdout: {e}") from None
    info["valid_holdout"] = {
        "from": cfg.train_file,
        "fraction": cfg.valid_holdout,
        "seed": cfg.seed,
        "rows": len(valid_records),
        "terms": len({r.term for r in valid_records}),
        "train_rows_left": len(train_records),
    }
    log.info(
        "validating on a hold-out of %s: %d rows of %d terms",
        cfg.train_file,
        len(valid_records),
        info["valid_holdout"]["terms"],
    )
    return train_records, valid_records, info


def _log_encoding(name: str, enc: EncodedSet, cutoff: int) -> None:
    log.info(
        "%s: %d examples, %d targets truncated at %d tokens, %d dropped (prompt alone >= %d tokens)",
        name,
        len(enc.examples),
        enc.truncated,
        cutoff,
        enc.prompt_too_long,
        cutoff,
    )


def _make_trainer_class() -> type:
    from transformers import Trainer

    class DefinitionTrainer(Trainer):
        """Trainer whose validation adds BLEU of greedy generated definitions (metric `eval_bleu`) and whose
        train_loss is the whole run's across resumes (each checkpoint keeps the loss sum up to its step)."""

        def __init__(
            self,
            *args: Any,
            bleu_records: list[Record],
            references: dict[str, list[str]],
            gen_tokenizer: Any,
            max_new_tokens: int,
            loss_sum_before: float = 0.0,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.bleu_records, self.references = bleu_records, references
            self.gen_tokenizer, self.max_new_tokens = gen_tokenizer, max_new_tokens
            self.loss_sum_before = loss_sum_before  # summed step losses up to the resumed checkpoint

        def _loss_sum(self) -> float:
            from transformers.trainer_pt_utils import nested_gather

            pending = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()  # not logged yet
            return self.loss_sum_before + self._total_loss_scalar + pending

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            # Written before HF's files, so a checkpoint with trainer_state.json (written last) has it too.
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            loss_sum = self._loss_sum()
            if self.args.should_save:
                write_json(folder / LOSS_SUM_FILE, {"global_step": self.state.global_step, "loss_sum": loss_sum})
            super()._save_checkpoint(model, trial)

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "train_loss" in logs:  # HF's final value covers only the steps of this process
                logs["train_loss"] = (self.loss_sum_before + self._total_loss_scalar) / max(self.state.global_step, 1)
            super().log(logs, *args, **kwargs)

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", "eval")  # the Trainer passes it by keyword
            output.metrics[f"{prefix}_{BEST_METRIC}"] = self.validation_bleu()
            return output

        def validation_bleu(self) -> float:
            """Mean BLEU over the sampled valid records, each rank generating its share."""
            rank, world = self.args.process_index, self.args.world_size
            mine, real = shard(self.bleu_records, rank, world)
            was_training = self.model.training
            self.model.eval()
            preds = generate_definitions(
                self.model, self.gen_tokenizer, mine, self.args.per_device_eval_batch_size, self.max_new_tokens
            )
            self.model.train(was_training)
            scores = bleu_scores(preds[:real], mine[:real], self.references)
            total = torch.tensor([sum(scores), float(real)], dtype=torch.float64, device=self.args.device)
            if world > 1:
                torch.distributed.all_reduce(total)
            return float(total[0] / total[1])

    return DefinitionTrainer


def _json_log_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class JsonLogCallback(TrainerCallback):
        """Append every log (loss, learning_rate, grad_norm, eval_loss, eval_bleu) as one JSON line."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return JsonLogCallback()


def is_finished(cfg: TrainConfig) -> bool:
    """True when `output_dir` holds the finished export of exactly this config and these inputs."""
    manifest = read_manifest(cfg.output_dir)
    return bool(
        manifest
        and manifest.get("stage") == "train"
        and is_finished_run(cfg.output_dir, cfg, lambda: inputs_fingerprint(cfg))
    )


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` is no complete checkpoint, or None. The Trainer writes the weights (DeepSpeed: a
    `global_step*` folder, then `latest` once every rank is done), optimizer, scheduler and RNG states, then
    trainer_state.json last; train_loss_sum.json comes first. A kill during a save leaves one of them out."""
    folder = Path(folder)
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, ValueError):
        return f"unreadable {TRAINER_STATE}"
    step = state.get("global_step") if isinstance(state, dict) else None
    named = folder.name.split("-")[-1]
    if not isinstance(step, int) or (folder.name.startswith("checkpoint-") and named.isdigit() and int(named) != step):
        return f"{TRAINER_STATE} is not of step {named}"
    try:
        if json.loads((folder / LOSS_SUM_FILE).read_text(encoding="utf-8"))["global_step"] != step:
            return f"{LOSS_SUM_FILE} is not of step {step}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {LOSS_SUM_FILE}"
    if not any(folder.glob("rng_state*.pth")):
        return "no RNG state"
    if (folder / "latest").is_file() or any(folder.glob("global_step*")):
        tag = (folder / "latest").read_text(encoding="utf-8").strip() if (folder / "latest").is_file() else None
        if tag is None or not any((folder / tag).glob("*model_states.pt")):
            return "no complete DeepSpeed checkpoint (`latest` and its model states)"
        return None
    weights = next((folder / n for n in _WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        return "no model weights"
    if weights.name.endswith(".index.json"):
        shards = set(json.loads(weights.read_text(encoding="utf-8"))["weight_map"].values())
        if not all((folder / shard).is_file() for shard in shards):
            return "a weight shard is missing"
    missing = [n for n in ("optimizer.pt", "scheduler.pt") if not (folder / n).is_file()]
    return f"no {missing[0]}" if missing else None


def last_checkpoint(output_dir: str | Path, remove_incomplete: bool = False) -> Path | None:
    """Newest complete `checkpoint-N` folder of a run, or None; incomplete ones are logged (and removed)."""
    ckpts = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    found = None
    for ckpt in ckpts:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            found = found or ckpt
            continue
        log.warning(
            "%s is incomplete (%s), left by an interrupted save: %s",
            ckpt,
            problem,
            "removing it" if remove_incomplete else "ignoring it",
        )
        if remove_incomplete:
            shutil.rmtree(ckpt, ignore_errors=True)
    return found


def resume_point(cfg: TrainConfig, main_rank: bool = True) -> str | None:
    """Checkpoint to resume from: explicit, 'last', or automatically the newest complete one of an interrupted
    run of the same config (a different config in the same folder is an error, not a silent mix). The main
    rank removes incomplete checkpoints, and with `force` every checkpoint (the run starts over)."""
    if cfg.resume_from_checkpoint not in (None, "last"):
        if not Path(cfg.resume_from_checkpoint).is_dir():
            raise ConfigError(f"resume_from_checkpoint: {cfg.resume_from_checkpoint}: no such folder")
        problem = checkpoint_problem(cfg.resume_from_checkpoint)
        if problem is not None:
            raise ConfigError(
                f"resume_from_checkpoint: {cfg.resume_from_checkpoint}: incomplete checkpoint ({problem})"
            )
        return cfg.resume_from_checkpoint
    if cfg.force:
        if main_rank:
            for ckpt in Path(cfg.output_dir).glob("checkpoint-*"):
                log.info("force: removing %s, training starts over", ckpt)
                shutil.rmtree(ckpt)
        return None
    ckpt = last_checkpoint(cfg.output_dir, remove_incomplete=main_rank)
    if ckpt is None:
        if cfg.resume_from_checkpoint == "last":
            raise ConfigError(f"resume_from_checkpoint: no complete checkpoint-* folder in {cfg.output_dir}")
        return None
    saved = Path(cfg.output_dir) / RUN_CONFIG_FILE
    if saved.is_file() and json.loads(saved.read_text(encoding="utf-8")).get("config_hash") != _resume_hash(cfg):
        raise ConfigError(f"{cfg.output_dir} holds checkpoints of a different config; use another output_dir")
    log.info("resuming the interrupted run from %s", ckpt)
    return str(ckpt)


def _resume_hash(cfg: TrainConfig) -> str:
    return config_hash(cfg.model_copy(update={"resume_from_checkpoint": None, "report_to": "none"}))


def resumed_loss_sum(resume: str | None) -> tuple[int, float]:
    """(step, summed step losses up to it) of the checkpoint resumed from; (0, 0.0) for a fresh run."""
    if resume is None:
        return 0, 0.0
    saved = json.loads((Path(resume) / LOSS_SUM_FILE).read_text(encoding="utf-8"))
    return int(saved["global_step"]), float(saved["loss_sum"])


def trim_log(path: Path, step: int) -> None:
    """Keep the rows of the JSON-lines log `path` up to `step`, those a run resumed there does not log again
    (a fresh run, step 0, starts it empty); a final summary row and a torn last line go too."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict) and row.get("step", 0) <= step and "train_runtime" not in row:
                kept.append(line)
    if len(kept) < len(lines):
        log.info(
            "%s: dropping %d rows past step %d, logged before the interruption", path, len(lines) - len(kept), step
        )
    with atomic_open(path) as f:
        f.write("".join(line + "\n" for line in kept))


def _export(trainer: Any, cfg: TrainConfig, tokenizer: Any) -> None:
    """Save the final (best) model into output_dir as an HF folder; all ranks take part (ZeRO-3 gather)."""
    out = Path(cfg.output_dir)
    tmp = out / ".export.tmp"
    main_rank = trainer.is_world_process_zero()
    if main_rank:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if cfg.use_lora:
        trainer.save_model(str(tmp / ADAPTER_DIR))
        if main_rank:
            export_merged(cfg.model_name_or_path, tmp / ADAPTER_DIR, tmp, weights_dtype(cfg))
    else:
        trainer.save_model(str(tmp))
    if main_rank:
        tokenizer.save_pretrained(str(tmp))
        for item in tmp.iterdir():
            if item.is_dir():
                swap_in(item, out / item.name)
            else:
                os.replace(item, out / item.name)
        tmp.rmdir()
    trainer.accelerator.wait_for_everyone()


def _lr_curve(log_history: list[dict[str, Any]]) -> dict[str, float]:
    lrs = [h["learning_rate"] for h in log_history if "learning_rate" in h]
    return {"first": lrs[0], "peak": max(lrs), "last": lrs[-1]} if lrs else {}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one finetuning; return the summary written to `output_dir/train_summary.json`."""
    if cfg.objective != "sft":
        raise ConfigError(f"objective {cfg.objective!r} is run by its own module (training.train dispatches it)")
    gpu = on_gpu(cfg)  # a device this machine lacks is refused before any record is read
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    ds_config = prepare_deepspeed(cfg.deepspeed, gpu)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    train_records, valid_records, valid_info = training_records(cfg)
    tokenizer = load_tokenizer(cfg)
    train_set = encode_records(tokenizer, train_records, cfg.cutoff_len, cfg.train_on_prompt)
    _log_encoding("train", train_set, cfg.cutoff_len)
    if not train_set.examples:
        raise DataError(str(cfg.train_file), None, None, f"every prompt is longer than cutoff_len {cfg.cutoff_len}")
    valid_set = encode_records(tokenizer, valid_records, cfg.cutoff_len, cfg.train_on_prompt)
    if cfg.do_validation:
        _log_encoding("valid", valid_set, cfg.cutoff_len)

    plan = plan_steps(cfg, len(train_set.examples), world_size)
    log.info("plan: %s", plan)
    args = build_training_args(cfg, plan, ds_config)
    resume = resume_point(cfg, main_rank=args.process_index == 0)
    resumed_step, loss_sum_before = resumed_loss_sum(resume)
    if args.process_index == 0:
        clear_manifest(out)
        trim_log(out / LOG_FILE, resumed_step)
        write_json(out / RUN_CONFIG_FILE, {"config_hash": _resume_hash(cfg), "config": cfg.model_dump(mode="json")})
    init_zero3(ds_config, gpu)
    model = load_model(cfg)

    from transformers import EarlyStoppingCallback

    callbacks = [_json_log_callback(out / LOG_FILE)]
    if cfg.do_validation and cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set.examples,
        eval_dataset=valid_set.examples if cfg.do_validation else None,
        data_collator=functools.partial(pad_batch, pad_token_id=pad_token_id(tokenizer)),
        callbacks=callbacks,
        bleu_records=sample_records(valid_set.records, cfg.eval_samples, cfg.seed),
        references=term_references(valid_records),
        gen_tokenizer=tokenizer,
        max_new_tokens=cfg.eval_max_new_tokens,
        loss_sum_before=loss_sum_before,
    )
    result = trainer.train(resume_from_checkpoint=resume)  # metrics["train_loss"]: the whole run's (log())
    _export(trainer, cfg, tokenizer)

    history = trainer.state.log_history
    summary = {
        "train": train_set.summary(),
        "valid": valid_set.summary() if cfg.do_validation else None,
        "plan": plan.__dict__,
        "global_step": trainer.state.global_step,
        "train_loss": result.metrics["train_loss"],
        "best_bleu": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "losses": [h["loss"] for h in history if "loss" in h],
        "valid_bleu": [h["eval_bleu"] for h in history if "eval_bleu" in h],
        "learning_rate": _lr_curve(history),
        "resumed_from": resume,
        **valid_info,
    }
    if trainer.is_world_process_zero():
        write_json(out / SUMMARY_FILE, summary)
        if not cfg.keep_checkpoints:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt)
        write_manifest(out, "train", cfg, inputs=inputs_fingerprint(cfg), seed=cfg.seed, world_size=world_size)
    trainer.accelerator.wait_for_everyone()
    return summary
