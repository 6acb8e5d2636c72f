"""Validation BLEU by generation: greedy definitions for a seeded sample of the valid split (or of a
seeded hold-out of the train rows)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from dataset.records import Record, normalize_space
from evaluation.bleu import moses_max_single_bleu
from training.data import encode_prompts, left_pad, pad_token_id


def sample_records(records: Sequence[Record], n: int | None, seed: int) -> list[Record]:
    """Seeded sample of `n` records kept in file order (all when `n` is None or larger than the split)."""
    if n is None or n >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def hold_out_terms(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split records by whole terms: seeded terms are held out until they hold `fraction` of the rows (at
    least one row, and at least one term stays). Returns (kept, held_out), both in file order."""
    terms = sorted({r.term for r in records})
    if len(terms) < 2:
        raise ValueError(f"a hold-out by terms needs rows of at least 2 terms, got {len(terms)}")
    random.Random(seed).shuffle(terms)
    rows_of = Counter(r.term for r in records)
    target, held, count = max(1, round(fraction * len(records))), set(), 0
    for term in terms[:-1]:
        if count >= target:
            break
        held.add(term)
        count += rows_of[term]
    return [r for r in records if r.term not in held], [r for r in records if r.term in held]


def shard(items: Sequence[Any], rank: int, world_size: int) -> tuple[list[Any], int]:
    """Rank's share of `items`, padded so every rank runs the same number of batches (ZeRO-3 generation
    is collective); returns (share, how many of its first entries are real)."""
    per_rank = -(-len(items) // world_size)
    mine = list(items[rank * per_rank : (rank + 1) * per_rank])
    real = len(mine)
    filler = items[-1:] if items else []
    return mine + filler * (per_rank - real), real


@torch.no_grad()
def generate_definitions(
    model: Any, tokenizer: Any, records: Sequence[Record], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy definitions for `records`, prompted exactly as in training (prompts.builder)."""
    pid = pad_token_id(tokenizer)
    prompts = encode_prompts(tokenizer, records)
    device = next(model.parameters()).device
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="valid generation", unit=" batches", disable=None):
        batch = {k: v.to(device) for k, v in left_pad(prompts[i : i + batch_size], pid).items()}
        gen = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pid,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, batch["input_ids"].shape[1] :]
        out += [normalize_space(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def bleu_scores(predictions: Sequence[str], records: Sequence[Record], references: dict[str, list[str]]) -> list[float]:
    """Moses sentence BLEU (0-100) of each prediction, max over all valid definitions of its term."""
    return [100.0 * moses_max_single_bleu(p, references[r.term]) for p, r in zip(predictions, records, strict=True)]
