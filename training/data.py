"""Records -> token ids for causal-LM finetuning (prompt masked with -100), and dynamic padding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dataset.records import Record
from prompts.builder import build_prompt, build_training_text

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example; `truncated` is True when the target was cut at `cutoff_len`."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_example(
    tokenizer: Any, term: str, context: str, definition: str, cutoff_len: int, train_on_prompt: bool = False
) -> Encoded | None:
    """Tokenize prompt and target separately (BOS/EOS from the tokenizer), mask the prompt.

    The prompt is never cut: an example whose prompt alone reaches `cutoff_len` returns None (the
    caller counts it). A target that does not fit is truncated and flagged. With `train_on_prompt`
    the prompt tokens keep their labels too.
    """
    prompt, target = build_training_text(
        term, context, definition, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or ""
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    room = cutoff_len - len(prompt_ids)
    if room <= 0:
        return None
    truncated = len(target_ids) > room
    target_ids = target_ids[:room]
    prompt_labels = list(prompt_ids) if train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
    return Encoded(prompt_ids + target_ids, prompt_labels + target_ids, truncated)


@dataclass(frozen=True)
class EncodedSet:
    """Tokenized records plus what the cutoff did to them (reported, never silent: the original's bug 28)."""

    examples: list[dict[str, list[int]]]
    records: list[Record]
    truncated: int
    prompt_too_long: int

    def summary(self) -> dict[str, int]:
        return {
            "examples": len(self.examples),
            "truncated_targets": self.truncated,
            "dropped_prompt_too_long": self.prompt_too_long,
        }


def encode_records(
    tokenizer: Any, records: Iterable[Record], cutoff_len: int, train_on_prompt: bool = False
) -> EncodedSet:
    """Encode every record; count truncated targets and records whose prompt alone exceeds the cutoff."""
    examples: list[dict[str, list[int]]] = []
    kept: list[Record] = []
    truncated = too_long = 0
    for r in records:
        enc = encode_example(tokenizer, r.term, r.context, r.definition, cutoff_len, train_on_prompt)
        if enc is None:
            too_long += 1
            continue
        truncated += enc.truncated
        examples.append({"input_ids": enc.input_ids, "labels": enc.labels})
        kept.append(r)
    return EncodedSet(examples, kept, truncated, too_long)


def encode_prompts(tokenizer: Any, records: Sequence[Record]) -> list[list[int]]:
    """Token ids of the inference prompt of each record (the exact prefix of its training text)."""
    bos = tokenizer.bos_token or ""
    return [
        tokenizer(build_prompt(r.term, r.context, bos_token=bos), add_special_tokens=False)["input_ids"]
        for r in records
    ]


def left_pad(prompts: Sequence[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt ids for batched generation (attention 0 on the padding)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (labels are -100 on padding, so the choice is inert)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token")
    return pid


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
