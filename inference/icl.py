"""Few-shot demos per input: random-k or retrieval-k (MiniLM nearest neighbours), never the input's own term.

The original drew ONE random demo set with replacement for every input and its retrieval mode
did not run (bug 31). Here each input gets its own seeded demos, drawn without replacement from
training examples whose term differs from the input's (case-insensitive).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataset.records import Record, load_records
from inference.tasks import Demo, Item
from prompts.builder import render_question
from run_config.errors import DataError

QUERY_CHUNK = 512


def _key(term: str) -> str:
    return term.strip().casefold()


def _demo(r: Record) -> Demo:
    return (r.term, r.context, r.definition)


def random_demos(items: Sequence[Item], pool: Sequence[Record], k: int, seed: int) -> dict[str, list[Demo]]:
    """k distinct random training examples per item (seeded by item id), none with the item's term."""
    out: dict[str, list[Demo]] = {}
    for item in items:
        rng = random.Random(f"{seed}:{item.id}")
        chosen: list[int] = []
        seen: set[int] = set()
        term = _key(item.term)
        while len(chosen) < k and len(seen) < len(pool):
            i = rng.randrange(len(pool))
            if i in seen:
                continue
            seen.add(i)
            if _key(pool[i].term) != term:
                chosen.append(i)
        if len(chosen) < k:
            raise DataError("icl_examples", None, None, f"only {len(chosen)} examples with a term other than "
                            f"{item.term!r}; icl_k is {k}")
        out[item.id] = [_demo(pool[i]) for i in chosen]
    return out


def embed_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised sentence embeddings (float32) of `texts` with a SentenceTransformer."""
    return model.encode(list(texts), batch_size=128, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=len(texts) > 5000).astype(np.float32)


def nearest_demos(query: np.ndarray, keys: np.ndarray, items: Sequence[Item], pool: Sequence[Record],
                  k: int) -> dict[str, list[Demo]]:
    """For each item, the k most similar pool examples with another term, least similar first."""
    out: dict[str, list[Demo]] = {}
    pool_terms = [_key(r.term) for r in pool]
    for start in range(0, len(items), QUERY_CHUNK):
        sims = query[start:start + QUERY_CHUNK] @ keys.T
        for row, item in zip(sims, items[start:start + QUERY_CHUNK]):
            term, width, chosen = _key(item.term), min(len(pool), 2 * k + 16), []
            while True:
                top = np.argpartition(-row, width - 1)[:width] if width < len(pool) else np.arange(len(pool))
                top = top[np.lexsort((top, -row[top]))]
                chosen = [int(i) for i in top if pool_terms[i] != term][:k]
                if len(chosen) == k or width == len(pool):
                    break
                width = min(len(pool), width * 4)
            if len(chosen) < k:
                raise DataError("icl_examples", None, None, f"only {len(chosen)} examples with a term other than "
                                f"{item.term!r}; icl_k is {k}")
            out[item.id] = [_demo(pool[i]) for i in reversed(chosen)]
    return out


def retrieval_demos(items: Sequence[Item], pool: Sequence[Record], k: int, embedder: str | Path,
                    device: str = "cpu") -> dict[str, list[Demo]]:
    """Retrieval-k: embed the question text (term + context, never a definition) of items and pool."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embedder), device=device)
    keys = embed_texts(model, [render_question(r.term, r.context) for r in pool])
    query = embed_texts(model, [render_question(i.term, i.context) for i in items])
    return nearest_demos(query, keys, items, pool, k)


def select_demos(mode: str, items: Sequence[Item], examples: str | Path, k: int, seed: int,
                 embedder: str | Path | None = None, device: str = "cpu") -> dict[str, list[Demo]]:
    """Demos of every item for `mode` (random or retrieval)."""
    pool = load_records(examples)
    if mode == "random":
        return random_demos(items, pool, k, seed)
    if embedder is None:
        from run_config.assets import minilm_path

        embedder = minilm_path()
    return retrieval_demos(items, pool, k, embedder, device)
