"""Settings of every metric (shared by the evaluate stage and the Python API), checked when they are made."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from run_config.devices import DEVICE_HELP, Device, Dtype
from run_config.loader import StageConfig


def packaged_baseline(model: str, lang: str = "en") -> Path | None:
    """The baseline table bert-score ships for hub model `model` (None when it has none)."""
    spec = importlib.util.find_spec("bert_score")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "rescale_baseline" / lang / f"{model}.tsv"
    return path if path.is_file() else None


def baseline_problem(rescale: bool, model: str, num_layers: int | None, given: str | None) -> str | None:
    """Why `bertscore_baseline_file` cannot serve these settings (None when rescaling can work, or is off)."""
    if not rescale:
        return "given but bertscore_rescale is off" if given else None
    if given is None:
        if packaged_baseline(model) is not None:
            return None
        return (
            f"needed with bertscore_rescale: bert-score ships no baseline for {model!r} "
            "(give a CSV table LAYER,P,R,F with one row per layer)"
        )
    path = Path(given)
    if not path.is_file():
        return f"{given}: no such file"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["LAYER", "P", "R", "F"]:
        return f"{given}:1: expected the header LAYER,P,R,F"
    for line, row in enumerate(rows[1:], 2):
        try:
            if len(row) != 4:
                raise ValueError
            [float(c) for c in row]
        except ValueError:
            return f"{given}:{line}: expected four numbers, got {','.join(row)[:60]!r}"
    if num_layers is not None and len(rows) - 1 <= num_layers:
        return f"{given}: no row for layer {num_layers} ({len(rows) - 1} rows)"
    return None


class MetricSettings(StageConfig):
    """Settings of every metric; the defaults are the paper's (GPU-sized models where it names one)."""

    bleu_tokenize: Literal["none", "13a"] = Field(
        "none", description="BLEU tokens: split on spaces only (Moses) or sacrebleu 13a"
    )
    bleu_smooth: Literal["moses", "exp", "nltk-method2"] = Field(
        "moses",
        description="BLEU smoothing: Moses BLEU+1, sacrebleu exp, or NLTK sentence_bleu method 2 "
        "(auto_reweigh, whitespace tokens; the giulianelli protocol's)",
    )
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
    device: Device = Field("cpu", description="torch device of the neural metrics' encoders: " + DEVICE_HELP)
    dtype: Dtype = Field(
        "float32", description="weights dtype of the neural metrics' encoders (auto: bfloat16 on a GPU)"
    )
    batch_size: int = Field(64, ge=1, description="encoder batch size")
    workers: int = Field(0, ge=0, description="worker processes for BLEU, ROUGE-L, METEOR, NIST (0: one per CPU core)")
    seed: int = Field(42, ge=0, description="seed of MAUVE's k-means and of the bootstrap")

    @field_validator("bertscore_baseline_file")
    @classmethod
    def _rescaling_has_a_baseline(cls, value: str | None, info: ValidationInfo) -> str | None:
        d = info.data
        if "bertscore_model" in d and "bertscore_num_layers" in d and "bertscore_rescale" in d:
            problem = baseline_problem(d["bertscore_rescale"], d["bertscore_model"], d["bertscore_num_layers"], value)
            if problem:
                raise ValueError(problem)
        return value
