"""TrainingArguments pieces shared by the HF Trainer stages (train, finetune-router)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def precision_flags(precision: str, gpu: bool) -> dict[str, bool]:
    """bf16/fp16 flags for TrainingArguments; mixed precision is GPU-only here (fp32 on CPU, logged)."""
    if precision != "fp32" and not gpu:
        log.warning("precision %s needs a GPU; training in fp32 on the CPU", precision)
        return {"bf16": False, "fp16": False}
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
