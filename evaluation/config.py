"""Typed config of the evaluate stage: the metric settings (evaluation.metrics.settings) plus the run's inputs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from evaluation.groups import GROUP_KEYS
from evaluation.metrics import resolve_names
from evaluation.metrics.settings import MetricSettings


class EvaluateConfig(MetricSettings):
    """Inputs, protocol, metrics and outputs of one evaluation run."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("predictions", "references", "compare_to", "train_references")

    predictions: list[str] = Field(
        min_length=1,
        description="predictions JSONL file(s): id, prediction, optional model, seed, sample_idx; "
        "with compare_to, each file is tested against the baseline",
    )
    references: str = Field(description="references: the preprocessed JSONL of the evaluation split")
    output_dir: str = Field(description="writes scores.json, per_example.jsonl, table.{md,csv,tex}, manifest.json")
    protocol: Literal["max", "multi-ref", "per-context", "orig-compat", "ishiwatari", "giulianelli"] = Field(
        "max",
        description="reference protocol (max: the paper's; orig-compat: the original code's, inflated; "
        "ishiwatari, giulianelli: those peers' scorers)",
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["bleu", "rouge"],
        description="comma-separated metrics: " + "bleu, rouge, meteor, nist, bertscore, moverscore, mauve, sacrebleu",
    )
    dataset: str | None = Field(None, description="dataset name in the table; unset: the references' source")
    compare_to: str | None = Field(
        None,
        description="baseline predictions JSONL: paired bootstrap, approximate randomization and t-test "
        "p-values of every predictions file against it (Holm-corrected over the files)",
    )
    bootstrap_samples: int = Field(
        1000,
        ge=10,
        description="resamples of the 95% CIs and the paired bootstrap; trials of approximate randomization",
    )
    group_by: list[str] = Field(
        default_factory=list,
        description="comma-separated keys to also score per group (scores.json groups, table_KEY.*): "
        + ", ".join(GROUP_KEYS),
    )
    train_references: str | None = Field(
        None, description="training-split JSONL: the terms group key seen counts as seen (needed by it)"
    )
    require_all: bool = Field(False, description="error (instead of a count) when a reference id has no prediction")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @field_validator("predictions", mode="before")
    @classmethod
    def _one_or_more_files(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("metrics", "group_by", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, list):
            return [m.strip() for item in value for m in str(item).split(",") if m.strip()]
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        return resolve_names(value)

    @field_validator("group_by")
    @classmethod
    def _known_groups(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if k not in GROUP_KEYS]
        if unknown:
            raise ValueError(f"unknown group key {unknown[0]!r}; choose from {', '.join(GROUP_KEYS)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _seen_needs_train_references(self) -> EvaluateConfig:
        if "seen" in self.group_by and not self.train_references:
            raise ValueError("group_by seen needs train_references (the training split whose terms count as seen)")
        return self
