"""The embedded default lexicon: WordNet 3.0 glosses with their usage examples, split by word."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from dataset.records import Dropped, Record, normalize_space

SOURCE = "WordNet"
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


def _find_term(lemmas: list[str], example: str) -> str | None:
    """Pick the lemma that the example uses (exact word, else an inflected form such as `barked`)."""
    low = example.lower()
    for lemma in lemmas:
        if re.search(r"\b" + re.escape(lemma.lower()) + r"\b", low):
            return lemma
    for lemma in lemmas:
        stem = lemma.lower()[:-1] if len(lemma) > 3 and lemma.lower().endswith("e") else lemma.lower()
        if len(stem) >= 3 and re.search(r"\b" + re.escape(stem) + r"\w{0,4}\b", low):
            return lemma
    return None


def word_level_split(terms: set[str], seed: int) -> dict[str, str]:
    """Assign each term to train/valid/test (80/10/10), so no term crosses splits."""
    ordered = sorted(terms)
    random.Random(seed).shuffle(ordered)
    out, start = {}, 0
    for i, (split, frac) in enumerate(SPLIT_FRACTIONS):
        end = len(ordered) if i == len(SPLIT_FRACTIONS) - 1 else start + round(frac * len(ordered))
        out.update({t: split for t in ordered[start:end]})
        start = end
    return out


def iter_wordnet_records(seed: int = 42) -> Iterator[Record | Dropped]:
    """Yield one record per (synset, usage example); an example using none of the lemmas is Dropped."""
    from nltk.corpus import wordnet as wn

    from run_config.assets import use_offline_wordnet

    use_offline_wordnet()
    rows = []
    for synset in wn.all_synsets():
        lemmas = [name.replace("_", " ") for name in synset.lemma_names()]
        for k, example in enumerate(synset.examples()):
            example = normalize_space(example.strip('"'))
            term = _find_term(lemmas, example)
            if term:
                rows.append((f"wordnet:{synset.name()}:{k}", term, example, normalize_space(synset.definition())))
            else:
                yield Dropped("example uses none of the synset's lemmas", 0)
    split_of = word_level_split({r[1] for r in rows}, seed)
    for rid, term, context, definition in rows:
        yield Record(rid, term, context, definition, SOURCE, split_of[term])
