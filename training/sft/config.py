"""Typed config of the training stage (SFT of one causal LM, or one expert per cluster)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import StageConfig

Objective = Literal["sft", "dskd"]


class TrainConfig(StageConfig):
    """Supervised finetuning for definition modeling; defaults follow the paper's Table 12."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("model_name_or_path", "train_file", "valid_file")

    objective: Objective = Field("sft", description="training objective; dskd delegates to training.dskd")
    model_name_or_path: str = Field(description="base model (hub id or local HF folder)")
    tokenizer_name_or_path: str | None = Field(None, description="tokenizer (default: the model's)")
    train_file: str | None = Field(None, description="preprocessed train JSONL (not needed with --experts)")
    valid_file: str | None = Field(
        None,
        description="preprocessed valid JSONL: validation loss and BLEU, "
        "early stopping, best checkpoint (test-split records are refused)",
    )
    allow_test_as_valid: bool = Field(
        False,
        description="let valid_file hold test-split records (model selection on test; the summary carries a warning)",
    )
    valid_holdout: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="validate on this seeded share of the "
        "train rows (whole terms, held out of training) instead of valid_file; "
        "experts of clusters without valid rows use 0.1 when unset",
    )
    output_dir: str = Field(description="output folder (HF model + tokenizer, logs, manifest)")
    run_name: str | None = Field(None, description="run name for logs and wandb (default: output folder name)")
    seed: int = Field(42, description="seed of model init, shuffling and validation sampling (paper: 21, 42, 84)")

    cutoff_len: int = Field(128, ge=8, description="max tokens of prompt + definition; prompts are never cut")
    train_on_prompt: bool = Field(False, description="also put loss on the prompt tokens (paper: no)")
    max_train_samples: int | None = Field(None, ge=1, description="use only the first N training records")

    num_train_epochs: float = Field(3.0, gt=0, description="epochs")
    max_steps: int = Field(-1, description="stop after N optimizer steps (-1: run the epochs)")
    learning_rate: float = Field(5e-6, gt=0, description="peak learning rate")
    lr_scheduler_type: Literal["cosine", "linear", "constant_with_warmup", "cosine_with_min_lr"] = Field(
        "cosine", description="schedule after warm-up (cosine decays to 0)"
    )
    min_lr_rate: float | None = Field(
        None, ge=0, lt=1, description="floor of cosine_with_min_lr, as a fraction of the peak"
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear warm-up as a fraction of all steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    adam_beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.95, gt=0, lt=1, description="AdamW beta2")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    optim: str = Field("adamw_torch", description="HF optimizer name (adamw_torch_fused on GPU)")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping (0: off)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout written into every dropout field of the model config")

    per_device_train_batch_size: int = Field(8, ge=1, description="micro-batch per device")
    per_device_eval_batch_size: int = Field(8, ge=1, description="validation batch per device (loss and generation)")
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="sequences per optimizer step; sets gradient accumulation = global / (micro-batch x devices)",
    )
    gradient_accumulation_steps: int | None = Field(None, ge=1, description="explicit gradient accumulation")
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="mixed precision (fp32 on CPU)")
    device: Device = Field(
        "auto",
        description=DEVICE_HELP + " (cuda:N: give the GPUs with CUDA_VISIBLE_DEVICES; each rank takes cuda:LOCAL_RANK)",
    )
    dtype: Dtype = Field(
        "float32", description="dtype the weights load in (original key: model_dtype; auto: bfloat16 on a GPU)"
    )
    attn_implementation: str | None = Field(None, description="sdpa, eager, flash_attention_2 (default: HF's)")
    trainable_layers: str = Field("all", description="'all', or comma-separated parameter-name substrings to train")

    do_validation: bool = Field(True, description="evaluate on the valid split (loss + generated BLEU)")
    eval_times: int = Field(10, ge=1, description="validations (and checkpoints) per run")
    eval_samples: int | None = Field(
        256, ge=1, description="valid records scored by generation (seeded sample; null: all)"
    )
    eval_max_new_tokens: int = Field(64, ge=1, description="generation length during validation (greedy)")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="stop after N validations without a BLEU gain (null: never; inactive without validation)"
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="minimum BLEU gain that counts")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept (the best one always)")
    keep_checkpoints: bool = Field(False, description="keep checkpoint-* folders after a finished run")
    logging_steps: int = Field(10, ge=1, description="log loss and learning rate every N steps")
    report_to: Literal["none", "wandb", "tensorboard"] = Field(
        "none", description="experiment tracker (wandb runs offline without WANDB_API_KEY)"
    )
    dataloader_num_workers: int = Field(0, ge=0, description="data-loader worker processes")

    deepspeed: str | None = Field(None, description="DeepSpeed JSON (run_config/ds_zero{2,3}[_offload].json)")
    resume_from_checkpoint: str | None = Field(
        None, description="checkpoint folder, or 'last' for the newest complete one in output_dir"
    )
    force: bool = Field(
        False, description="train from scratch even when output_dir holds a finished run or checkpoints of it"
    )

    use_lora: bool = Field(False, description="train LoRA adapters instead of all weights")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="modules that get adapters"
    )
    qlora: bool = Field(False, description="load the base in 4-bit NF4 (needs CUDA + bitsandbytes)")

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "data_path_train": "train_file",
        "data_path_valid": "valid_file",
        "data_path_test": None,  # training never reads the test split (the original's bug 25)
        "num_epochs": "num_train_epochs",
        "model_dtype": "dtype",
        "batch_size": "global_batch_size",
        "train_on_input": "train_on_prompt",
        "do_eval": "do_validation",
        "warmup_rate": "warmup_ratio",
        "do_train": None,
        "do_predict": None,  # prediction is the infer stage
        "model_type": None,  # special tokens come from the tokenizer
        "mask_term": None,
        "seq2seq_training": None,
        "fsdp": None,
        "fsdp_wrap_layer": None,
        "save_steps": None,  # checkpoints follow eval_times
        "eval_steps": None,
    }

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_scheduler_type == "cosine_with_min_lr" and self.min_lr_rate is None:
            raise ValueError("lr_scheduler_type cosine_with_min_lr needs min_lr_rate")
        if self.qlora and not self.use_lora:
            raise ValueError("qlora needs use_lora true")
        if self.device.startswith("cuda:"):
            raise ValueError(
                f"device {self.device}: training places rank r on cuda:r; pick the GPUs with CUDA_VISIBLE_DEVICES "
                "and give device cuda"
            )
        if self.force and self.resume_from_checkpoint is not None:
            raise ValueError("force starts training over: it cannot be combined with resume_from_checkpoint")
        return self
