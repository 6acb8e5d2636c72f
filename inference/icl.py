"""Few-shot demos per input: random-k or retrieval-k (MiniLM nearest neighbours), never the input's own term.

The original drew ONE random demo set with replacement for every input and its retrieval mode
did not run (bug 31). Here each input gets its own seeded demos, drawn without replacement from
training examples whose term differs from the input's (case-insensitive).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataset.records import Record, load_records
from inference.tasks import Demo, Item
from prompts.builder import render_question
from run_config.errors import DataError

QUERY_CHUNK = 512
BATCH_SIZE = 128


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
            raise DataError(
                "icl_examples",
                None,
                None,
                f"only {len(chosen)} examples with a term other than {item.term!r}; icl_k is {k}",
            )
        out[item.id] = [_demo(pool[i]) for i in chosen]
    return out


def nearest_demos(
    query: np.ndarray, keys: np.ndarray, items: Sequence[Item], pool: Sequence[Record], k: int
) -> dict[str, list[Demo]]:
    """For each item, the k most similar pool examples with another term, least similar first."""
    out: dict[str, list[Demo]] = {}
    pool_terms = [_key(r.term) for r in pool]
    for start in range(0, len(items), QUERY_CHUNK):
        sims = query[start : start + QUERY_CHUNK] @ keys.T
        for row, item in zip(sims, items[start : start + QUERY_CHUNK]):
            term, width, chosen = _key(item.term), min(len(pool), 2 * k + 16), []
            while True:
                top = np.argpartition(-row, width - 1)[:width] if width < len(pool) else np.arange(len(pool))
                top = top[np.lexsort((top, -row[top]))]
                chosen = [int(i) for i in top if pool_terms[i] != term][:k]
                if len(chosen) == k or width == len(pool):
                    break
                width = min(len(pool), width * 4)
            if len(chosen) < k:
                raise DataError(
                    "icl_examples",
                    None,
                    None,
                    f"only {len(chosen)} examples with a term other than {item.term!r}; icl_k is {k}",
                )
            out[item.id] = [_demo(pool[i]) for i in reversed(chosen)]
    return out


def retrieval_demos(
    items: Sequence[Item],
    pool: Sequence[Record],
    k: int,
    embedder: str | Path,
    device: str = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, list[Demo]]:
    """Retrieval-k: embed the question text (term + context, never a definition) of items and pool on
    `device`. The pool's embeddings are cached in `cache_dir` (default: the asset cache's
    `icl-embeddings/`), keyed by embedder and pool texts, so a large pool is embedded once."""
    from clustering.embed import SentenceEncoder, embed_cached, make_spec
    from run_config.assets import cache_dir as asset_cache

    spec = make_spec(str(embedder), "term_context", "word_interpretation", None, None)
    encoder = SentenceEncoder(spec, device, BATCH_SIZE)
    cache = Path(cache_dir) if cache_dir else asset_cache() / "icl-embeddings"
    keys = embed_cached([render_question(r.term, r.context) for r in pool], spec, cache, encoder=encoder)
    query = encoder.encode([render_question(i.term, i.context) for i in items])
    return nearest_demos(query, keys, items, pool, k)


def select_demos(
    mode: str,
    items: Sequence[Item],
    examples: str | Path,
    k: int,
    seed: int,
    embedder: str | Path | None = None,
    device: str = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, list[Demo]]:
    """Demos of every item for `mode` (random or retrieval)."""
    pool = load_records(examples)
    if mode == "random":
        return random_demos(items, pool, k, seed)
    return retrieval_demos(items, pool, k, embedder or "minilm", device, cache_dir)
