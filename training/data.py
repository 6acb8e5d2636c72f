"""Records -> token ids for causal-LM finetuning (prompt masked with -100), and dynamic padding."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prompts.builder import build_training_text

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example; `truncated` is True when the target was cut at `cutoff_len`."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_example(tokenizer: Any, term: str, context: str, definition: str, cutoff_len: int) -> Encoded | None:
    """Tokenize prompt and target separately (BOS/EOS from the tokenizer), mask the prompt.

    The prompt is never cut: an example whose prompt alone reaches `cutoff_len` returns None (the
    caller counts it). A target that does not fit is truncated and flagged.
    """
    prompt, target = build_training_text(term, context, definition, bos_token=tokenizer.bos_token or "",
                                         eos_token=tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    room = cutoff_len - len(prompt_ids)
    if room <= 0:
        return None
    truncated = len(target_ids) > room
    target_ids = target_ids[:room]
    return Encoded(prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids, truncated)


def pad_batch(examples: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids`/`labels` to the longest example; labels pad with -100, attention 0."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
