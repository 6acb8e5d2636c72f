"""Typed config of the evaluate stage: metric settings (shared with the Python API) and run inputs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from run_config.loader import StageConfig

PROTOCOL_NAMES = ("max", "multi-ref", "per-context", "orig-compat")


class MetricSettings(StageConfig):
    """Settings of every metric; the defaults are the paper's (GPU-sized models where it names one)."""

    bleu_tokenize: Literal["none", "13a"] = Field(
        "none", description="BLEU tokens: split on spaces only (Moses) or sacrebleu 13a"
    )
    bleu_smooth: Literal["moses", "exp"] = Field("moses", description="BLEU smoothing: Moses BLEU+1 or sacrebleu exp")
    rouge_tokenizer: Literal["default", "word"] = Field(
        "default",
        description="ROUGE-L tokens: rouge_score default (lowercased, alphanumeric) or NLTK word tokens, case kept",
    )
    rouge_stemmer: bool = Field(False, description="Porter stemming in ROUGE-L (rouge_score use_stemmer)")
    nist_order: int = Field(5, ge=1, description="NIST maximum n-gram order")
    nist_short: Literal["lower-orders", "zero"] = Field(
        "lower-orders",
        description="NIST of a hypothesis shorter than nist_order: on the orders it has, or 0 "
        "(the original's: NLTK divides by zero, caught as 0)",
    )
    bertscore_model: str = Field("roberta-large", description="BERTScore model name or local folder")
    bertscore_num_layers: int | None = Field(
        None,
        ge=1,
        description="BERTScore layer; unset: bert-score's table (17 for roberta-large); required for a folder",
    )
    bertscore_idf: bool = Field(False, description="BERTScore idf weighting (idf from the references being scored)")
    bertscore_rescale: bool = Field(
        False,
        description="BERTScore baseline rescaling (bert-score's table for hub "
        "models it knows, else bertscore_baseline_file)",
    )
    bertscore_baseline_file: str | None = Field(
        None,
        validate_default=True,
        description="BERTScore rescaling baseline: CSV LAYER,P,R,F, one row per layer (needed for a local model)",
    )
    moverscore_model: str = Field("distilbert-base-uncased", description="MoverScore encoder name or local folder")
    moverscore_layer: int = Field(-1, description="MoverScore hidden layer (-1: last, as the original)")
    moverscore_max_length: int = Field(
        510, ge=1, description="MoverScore truncation in subwords, special tokens not counted (the original's 510)"
    )
    mauve_model: str = Field("gpt2-large", description="MAUVE feature model name or local folder")
    mauve_pooling: Literal["last", "mean"] = Field(
        "last", description="MAUVE features: last token (MAUVE's own) or mean"
    )
    mauve_num_buckets: int | None = Field(None, ge=2, description="MAUVE k-means buckets; unset: MAUVE's auto (n/10)")
    max_length: int = Field(256, ge=8, description="MAUVE truncation length in tokens (special tokens included)")
    device: str = Field("cpu", description="torch device of the neural metrics (cpu, cuda, cuda:1, ...)")
    batch_size: int = Field(64, ge=1, description="encoder batch size")
    workers: int = Field(0, ge=0, description="worker processes for BLEU, ROUGE-L, METEOR, NIST (0: one per CPU core)")
    seed: int = Field(42, ge=0, description="seed of MAUVE's k-means and of the bootstrap")

    @field_validator("bertscore_baseline_file")
    @classmethod
    def _rescaling_has_a_baseline(cls, value: str | None, info: ValidationInfo) -> str | None:
        from evaluation.metrics.bertscore import baseline_problem

        d = info.data
        if "bertscore_model" in d and "bertscore_num_layers" in d and "bertscore_rescale" in d:
            problem = baseline_problem(d["bertscore_rescale"], d["bertscore_model"], d["bertscore_num_layers"], value)
            if problem:
                raise ValueError(problem)
        return value


class EvaluateConfig(MetricSettings):
    """Inputs, protocol, metrics and outputs of one evaluation run."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("predictions", "references", "compare_to")

    predictions: str = Field(description="predictions JSONL: id, prediction, optional model, seed, sample_idx")
    references: str = Field(description="references: the preprocessed JSONL of the evaluation split")
    output_dir: str = Field(description="writes scores.json, per_example.jsonl, table.{md,csv,tex}, manifest.json")
    protocol: Literal["max", "multi-ref", "per-context", "orig-compat"] = Field(
        "max", description="reference protocol (max: the paper's; orig-compat: the original code's, inflated)"
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["bleu", "rouge"],
        description="comma-separated metrics: " + "bleu, rouge, meteor, nist, bertscore, moverscore, mauve, sacrebleu",
    )
    dataset: str | None = Field(None, description="dataset name in the table; unset: the references' source")
    compare_to: str | None = Field(None, description="second predictions JSONL: paired bootstrap + t-test p-values")
    bootstrap_samples: int = Field(1000, ge=10, description="paired bootstrap resamples")
    require_all: bool = Field(False, description="error (instead of a count) when a reference id has no prediction")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @field_validator("metrics", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, list):
            return [m.strip() for item in value for m in str(item).split(",") if m.strip()]
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from evaluation.metrics import resolve_names

        return resolve_names(value)
