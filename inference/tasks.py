"""Inference items of each task from records: prompt building (prompts.builder) and answer parsing (prompts.parse)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset.records import Record, iter_records, normalize_space
from prompts.builder import OPTION_LETTERS, build_task_prompt
from prompts.parse import parse_choice, parse_definition, parse_list, split_list
from run_config.errors import DataError

Demo = tuple[str, str, str]


@dataclass(frozen=True)
class Item:
    """One input to generate for; `options`/`answer` are set for WSD only."""

    id: str
    term: str
    context: str
    definition: str
    line: int
    options: tuple[str, ...] = ()
    answer: int | None = None


def load_inputs(path: str | Path) -> tuple[list[Record], list[int]]:
    """Read the input JSONL (first bad line or duplicate id raises); return records and their line numbers."""
    records: list[Record] = []
    lines: list[int] = []
    for lineno, record in iter_records(path):
        records.append(record)
        lines.append(lineno)
    if not records:
        raise DataError(str(path), None, None, "no records")
    return records, lines


def subset_items(items: list[Item], max_items: int | None, seed: int) -> list[Item]:
    """A seeded random subset of `max_items` items, in file order (all when None)."""
    if max_items is None or max_items >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), max_items))
    return [items[i] for i in keep]


def _wsd_options(
    record: Record, by_term: dict[str, list[str]], pool: list[str], seed: int
) -> tuple[tuple[str, ...], int]:
    """Gold definition + 3 distractors (other senses of the term first, then other terms'), shuffled."""
    rng = random.Random(f"{seed}:{record.id}")
    others = [d for d in dict.fromkeys(by_term[record.term]) if d != record.definition]
    rng.shuffle(others)
    distractors = others[: len(OPTION_LETTERS) - 1]
    while len(distractors) < len(OPTION_LETTERS) - 1:
        candidate = pool[rng.randrange(len(pool))]
        if candidate != record.definition and candidate not in distractors:
            distractors.append(candidate)
    options = [record.definition, *distractors]
    rng.shuffle(options)
    return tuple(options), options.index(record.definition)


def build_items(task: str, records: Sequence[Record], lines: Sequence[int], seed: int) -> list[Item]:
    """Turn records into the task's items (WSD adds four seeded options per record)."""
    if task != "wsd":
        return [Item(r.id, r.term, r.context, r.definition, n) for r, n in zip(records, lines)]
    by_term: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by_term[r.term].append(r.definition)
    pool = list(dict.fromkeys(r.definition for r in records))
    if len(pool) < len(OPTION_LETTERS):
        raise DataError("wsd", None, None, f"needs at least {len(OPTION_LETTERS)} distinct definitions")
    items = []
    for r, n in zip(records, lines):
        options, answer = _wsd_options(r, by_term, pool, seed)
        items.append(Item(r.id, r.term, r.context, r.definition, n, options, answer))
    return items


def item_prompt(task: str, item: Item, bos_token: str, demos: Sequence[Demo] = ()) -> str:
    """The model input of one item."""
    return build_task_prompt(
        task,
        item.term,
        item.context,
        definition=item.definition,
        options=item.options,
        bos_token=bos_token,
        demos=demos,
    )


def parse_answer(task: str, item: Item, raw: str, chatty: bool = True) -> str:
    """The prediction text of a raw answer ("" when nothing usable is in it).

    Synthesis tasks give one item per line; WSD gives the chosen option's definition. With `chatty` off the
    text is kept as generated, whitespace collapsed (as training-time validation reads it).
    """
    if task == "word_interpretation":
        return parse_definition(raw, item.term) if chatty else normalize_space(raw)
    if task == "wsd":
        choice = parse_choice(raw)
        return item.options[choice] if choice is not None else ""
    return "\n".join(parse_list(raw) if chatty else split_list(raw))
