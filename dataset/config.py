"""Typed config of the preprocess stage."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dataset.readers import EXCLUDED_SOURCES
from run_config.loader import StageConfig


class PreprocessConfig(StageConfig):
    """Inputs -> one JSONL schema, split per source and split, plus a combined file."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("input",)

    input: list[str] = Field(default_factory=list, description="input files (3D-EX CSV, JSONL, Ishiwatari .txt)")
    builtin: Literal["wordnet"] | None = Field(None, description="use the embedded lexicon instead of --input")
    output_dir: str = Field(description="output folder (writes all.jsonl, <split>.jsonl, <source>/<split>.jsonl)")
    format: Literal["auto", "3dex-csv", "jsonl", "ishiwatari"] = Field("auto", description="input format")
    split: str | None = Field(None, description="split for rows/files that name none")
    on_bad_row: Literal["error", "skip"] = Field("error", description="malformed row: stop, or skip and count")
    exclude_sources: list[str] = Field(
        default_factory=lambda: list(EXCLUDED_SOURCES), description="sources dropped for lack of contexts"
    )
    seed: int = Field(42, description="seed of the embedded lexicon's word-level split")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @model_validator(mode="after")
    def _one_input_kind(self) -> PreprocessConfig:
        if bool(self.input) == bool(self.builtin):
            raise ValueError("give either input files or builtin, not both or neither")
        return self
