"""DSKD examples: tokenized records with their L_sem targets, and padded batches of them."""

from __future__ import annotations

from typing import Any

import torch

from dataset.records import Record
from training.data import IGNORE_INDEX, encode_example, pad_batch
from training.dskd.senses import SenseDictionary
from training.dskd.words import TokenTexts, word_spans


def encode_records(
    records: list[Record], tokenizer: Any, cutoff_len: int, senses: SenseDictionary | None = None
) -> tuple[list[dict], int]:
    """Tokenize records with `training.data.encode_example`; return (examples, dropped).

    With `senses`, each example also lists `sem` = (position t, word index) for every definition word
    in the dictionary: the state at t predicts the word's first token at t + 1.
    """
    texts = TokenTexts(tokenizer) if senses is not None else None
    examples, dropped = [], 0
    for r in records:
        enc = encode_example(tokenizer, r.term, r.context, r.definition, cutoff_len)
        if enc is None:
            dropped += 1
            continue
        example: dict[str, Any] = {"input_ids": enc.input_ids, "labels": enc.labels}
        if senses is not None:
            begin = next(i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX)
            example["sem"] = [
                (s.start - 1, senses.index(s.word)) for s in word_spans(enc.input_ids, texts, begin) if s.word in senses
            ]
        examples.append(example)
    return examples, dropped


def collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """`pad_batch` plus the L_sem targets as flat (batch, position, word) index tensors."""
    batch = pad_batch(examples, pad_token_id)
    sem = [(b, t, w) for b, e in enumerate(examples) for t, w in e.get("sem", [])]
    batch["sem"] = torch.tensor(sem, dtype=torch.long).reshape(-1, 3)
    return batch
