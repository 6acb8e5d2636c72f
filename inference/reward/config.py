"""Typed config of the train-reward stage (outcome reward model for Best-of-N)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from inference.config import DecodingConfig
from run_config.devices import DEVICE_HELP, Device, Dtype


class RewardConfig(DecodingConfig):
    """Mine negatives from a policy model, then train a Bradley-Terry reward model (paper §5, Table 12)."""

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = ("train", "valid", "policy_model", "base_model")

    train: str = Field(description="preprocessed JSONL of training records (gold definitions)")
    valid: str = Field(description="preprocessed JSONL of held-out records (pairwise accuracy)")
    output_dir: str = Field(description="writes model/ (HF checkpoint), pairs_{train,valid}.jsonl, metrics.json")
    policy_model: str = Field(description="the generator whose samples become negatives (HF folder)")
    base_model: str | None = Field(None, description="initial reward model (default: policy_model + new scalar head)")
    samples_per_prompt: int = Field(32, ge=2, description="samples per prompt (paper: 1:32)")
    negatives_per_prompt: int = Field(8, ge=1, description="most likely distinct samples kept (paper: 8)")
    max_train_prompts: int | None = Field(None, ge=1, description="a seeded subset of training records")
    max_valid_prompts: int | None = Field(None, ge=1, description="a seeded subset of held-out records")
    generate_batch_size: int = Field(8, ge=1, description="prompts per generate call while mining")
    epochs: int = Field(1, ge=1, description="passes over the training pairs")
    learning_rate: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (Table 12)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping (Table 12)")
    trainable_top_layers: int | None = Field(
        None,
        ge=0,
        description="train only the scalar head, final norm and this many top decoder layers (null: the whole model)",
    )
    batch_size: int = Field(8, ge=1, description="pairs per optimizer step")
    device: Device = Field("auto", description=DEVICE_HELP)
    dtype: Dtype = Field(
        "float32",
        description="weights dtype of the policy that samples negatives and of the reward model trained (auto: "
        "bfloat16 on a GPU)",
    )
    seed: int = Field(42, ge=0, description="seed of subsets, sampling, shuffling and the new head")
    force: bool = Field(False, description="redo even when the outputs are up to date")

    @model_validator(mode="after")
    def _enough_samples(self) -> RewardConfig:
        if self.negatives_per_prompt > self.samples_per_prompt:
            raise ValueError("negatives_per_prompt cannot exceed samples_per_prompt")
        return self
