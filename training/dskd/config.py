"""Typed config of the DSKD training objective."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import StageConfig


class DSKDConfig(StageConfig):
    """Teacher -> student distillation with L = CE + alpha*KL(teacher||student) + L_sem."""

    legacy_keys: ClassVar[dict[str, str | None]] = {
        "model_name_or_path": "teacher_model",
        **{
            k: None
            for k in (
                "model_type",
                "run_name",
                "do_train",
                "do_eval",
                "do_predict",
                "data_path_test",
                "mask_term",
                "train_on_input",
                "seq2seq_training",
                "eval_times",
                "eval_samples",
                "batch_size",
                "fsdp",
                "fsdp_wrap_layer",
            )
        },
    }

    objective: Literal["ce", "kd", "dskd"] = Field(
        "dskd", description="ce: cross-entropy only; kd: CE + alpha*KL; dskd: CE + alpha*KL + L_sem"
    )
    INPUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "teacher_model",
        "student_model",
        "data_path_train",
        "data_path_valid",
        "sense_corpus",
    )
    teacher_model: str = Field(description="teacher (HF id or folder; `asset:smollm2` = offline SmolLM2-135M)")
    student_model: str | None = Field(None, description="smaller student model; none: a truncated teacher copy")
    student_layers: int | None = Field(None, ge=1, description="layers of the truncated teacher (none: half)")
    trainable_layers: int = Field(2, ge=1, description="only the last N decoder layers of the student train")
    data_path_train: str = Field(description="training records JSONL (`asset:wordnet/train.jsonl` = embedded lexicon)")
    data_path_valid: str | None = Field(None, description="validation records JSONL (perplexity after training)")
    output_dir: str = Field(description="output folder (student/, senses/, train_log.jsonl, metrics.json)")

    sense_dir: str | None = Field(None, description="sense dictionary folder (none: <output_dir>/senses)")
    sense_corpus: list[str] = Field(
        default_factory=list,
        description="records JSONL whose contexts and definitions build the senses (empty: data_path_train)",
    )
    sense_k: int = Field(10, ge=1, description="k-means clusters (senses) per word")
    sense_min_per_cluster: int = Field(2, ge=1, description="occurrences per cluster: rare words get fewer senses")
    sense_max_occurrences: int = Field(2000, ge=1, description="contextual vectors kept per word")
    sense_max_texts: int | None = Field(None, ge=1, description="use only the first N corpus texts")
    sense_batch_size: int = Field(16, ge=1, description="texts per teacher forward pass")
    sense_chunk_texts: int = Field(512, ge=1, description="texts per resumable chunk on disk")
    sense_kmeans_n_init: int = Field(3, ge=1, description="k-means restarts per word")

    use_wordnet: bool = Field(True, description="synonyms and antonyms from WordNet (offline)")
    negation_prefixes: list[str] = Field(
        default_factory=lambda: ["un", "in", "im", "il", "ir", "dis", "non"],
        description="prefixes that negate a WordNet base word",
    )
    negation_suffixes: list[str] = Field(
        default_factory=lambda: ["less"], description="suffixes that negate a WordNet base word"
    )

    alpha: float = Field(1.0, ge=0, description="weight of KL(teacher||student)")
    kl_temperature: float = Field(1.0, gt=0, description="softmax temperature of the KL term")
    kappa: int = Field(5, ge=1, description="nearest sense vectors (to the teacher state) used per set")
    beta_p: float = Field(1.0, ge=0, description="weight of the pull term (own senses + synonyms)")
    beta_n: float = Field(1.0, ge=0, description="weight of the hinge push term (antonym senses)")
    gamma: float | None = Field(
        None,
        ge=0,
        description="hinge margin on the antonym MSE, in hidden-state MSE units; none: calibrated from the teacher "
        "(gamma_quantile)",
    )
    gamma_quantile: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="calibrated gamma = this quantile of the teacher's MSE to its kappa nearest antonym senses "
        "on the training positions",
    )
    gamma_samples: int = Field(
        1000, ge=1, description="training examples with antonym positions measured for the gamma calibration"
    )

    learning_rate: float = Field(5e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_rate: float = Field(0.1, ge=0, le=1, description="linear warm-up share of the steps, then cosine decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    num_epochs: float = Field(1.0, gt=0, description="passes over the training records")
    max_steps: int | None = Field(None, ge=1, description="stop after N optimizer steps (overrides num_epochs)")
    per_device_train_batch_size: int = Field(8, ge=1, description="examples per micro-batch")
    per_device_eval_batch_size: int = Field(16, ge=1, description="examples per evaluation batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    cutoff_len: int = Field(128, ge=8, description="max tokens of prompt + definition")
    max_train_samples: int | None = Field(None, ge=1, description="use only the first N training records")
    max_eval_samples: int | None = Field(None, ge=1, description="use only the first N validation records")
    logging_steps: int = Field(10, ge=1, description="log the loss terms every N optimizer steps")
    seed: int = Field(42, ge=0, description="seed of shuffling, k-means and initialisation")
    device: Device = Field("auto", description="teacher and student device: " + DEVICE_HELP)
    dtype: Dtype = Field("float32", description="teacher and student dtype (auto: bfloat16 on a GPU; not float16)")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @model_validator(mode="after")
    def _check(self) -> DSKDConfig:
        if self.dtype == "float16":
            raise ValueError("dtype float16: the student trains without loss scaling and would underflow; use bfloat16")
        if self.student_model is not None and self.student_layers is not None:
            raise ValueError("student_layers truncates the teacher; it cannot be combined with student_model")
        if self.student_layers is not None and self.trainable_layers > self.student_layers:
            raise ValueError(f"trainable_layers ({self.trainable_layers}) > student_layers ({self.student_layers})")
        return self

    @property
    def senses_path(self) -> Path:
        return Path(self.sense_dir) if self.sense_dir else Path(self.output_dir) / "senses"

    @property
    def corpus_paths(self) -> list[str]:
        """The sense corpus files, resolved and checked to exist."""
        return [input_path(p) for p in (self.sense_corpus or [self.data_path_train])]


def input_path(name: str) -> str:
    """Resolve an `asset:` name or path to an existing file, else raise a one-line DataError."""
    from dataset.lexicon import resolve_asset
    from run_config.cli import existing_file

    return str(existing_file(resolve_asset(name)))
