"""Lexical relations between vocabulary words: WordNet synonyms/antonyms plus morphological negation.

A negated word (`unkind`, `faultless`) is paired with its base (`kind`, `fault`) as antonyms only when
WordNet knows the base and glosses the word as a negation ("lacking kindness", "without fault"), so
`inside`/`side` or `discover`/`cover` are not paired. Each negation pair then flips the relations of
the negated word onto its base (reference Table 1): a synonym of `discontinue` is an antonym of
`continue`, an antonym of `unkind` a synonym of `kind`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from run_config.runtime import write_json

RELATIONS_FILE = "relations.json"
NEGATION_CUE = re.compile(
    r"\b(not|no|lacking|lacks|lack|without|absence|incapable|cannot|opposite|contrary|"
    r"reverse|free from|deficient|devoid)\b"
)
MIN_BASE_LEN = 3
STEM_LEN = 4


@dataclass(frozen=True)
class Relations:
    """Symmetric word -> sorted related words maps, and the (negated, base) pairs found by morphology."""

    synonyms: dict[str, list[str]]
    antonyms: dict[str, list[str]]
    negations: list[tuple[str, str]]

    def save(self, out_dir: Path) -> None:
        write_json(
            out_dir / RELATIONS_FILE,
            {"synonyms": self.synonyms, "antonyms": self.antonyms, "negations": [list(p) for p in self.negations]},
        )

    @classmethod
    def load(cls, out_dir: Path) -> Relations:
        data = json.loads((out_dir / RELATIONS_FILE).read_text(encoding="utf-8"))
        return cls(data["synonyms"], data["antonyms"], [tuple(p) for p in data["negations"]])

    def pair_counts(self) -> dict[str, int]:
        return {
            "synonym_pairs": sum(map(len, self.synonyms.values())) // 2,
            "antonym_pairs": sum(map(len, self.antonyms.values())) // 2,
            "negation_pairs": len(self.negations),
        }


def _wordnet():
    from run_config.assets import use_offline_wordnet

    use_offline_wordnet()
    from nltk.corpus import wordnet

    return wordnet


def _single(name: str) -> str | None:
    name = name.lower()
    return name if name.isalpha() and name.isascii() else None


def wordnet_pairs(vocab: Iterable[str]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Return (synonym pairs, antonym pairs) of single-word WordNet lemmas, from each vocabulary word."""
    wn = _wordnet()
    synonyms: set[tuple[str, str]] = set()
    antonyms: set[tuple[str, str]] = set()
    for word in vocab:
        for synset in wn.synsets(word):
            for lemma in synset.lemmas():
                other = _single(lemma.name())
                if other and other != word:
                    synonyms.add((word, other))
                if other == word:
                    antonyms.update((word, a) for a in map(_single, (x.name() for x in lemma.antonyms())) if a)
    return synonyms, antonyms


def is_wordnet_lemma(word: str) -> bool:
    """True when `word` itself (not only an inflection of it) is a WordNet lemma."""
    return any(lemma.name().lower() == word for s in _wordnet().synsets(word) for lemma in s.lemmas())


def _wordnet_antonyms(word: str, base: str) -> bool:
    return any(
        lemma.name().lower() == word and any(a.name().lower() == base for a in lemma.antonyms())
        for s in _wordnet().synsets(word)
        for lemma in s.lemmas()
    )


def _negates(gloss: str, base: str) -> bool:
    stem = base[:STEM_LEN]
    return NEGATION_CUE.search(gloss) is not None and any(w.startswith(stem) for w in re.findall(r"[a-z]+", gloss))


def negation_base(word: str, prefixes: Iterable[str], suffixes: Iterable[str]) -> str | None:
    """Return the WordNet base that `word` negates (`unkind` -> `kind`), or None.

    The base must be a WordNet lemma of at least three letters, and either WordNet lists the two as
    antonyms or one of the word's glosses reads as a negation of the base ("lacking kindness",
    "without fault": a negation cue and a word that starts like the base).
    """
    candidates = [word[len(p) :].lstrip("-") for p in prefixes if word.startswith(p)]
    candidates += [word[: -len(s)] for s in suffixes if word.endswith(s)]
    wn = _wordnet()
    for base in candidates:
        if len(base) < MIN_BASE_LEN or base == word or not is_wordnet_lemma(base):
            continue
        if _wordnet_antonyms(word, base) or any(_negates(s.definition(), base) for s in wn.synsets(word)):
            return base
    return None


def _symmetric(pairs: Iterable[tuple[str, str]], vocab: set[str]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        if a != b and a in vocab and b in vocab:
            out[a].add(b)
            out[b].add(a)
    return {w: sorted(out[w]) for w in sorted(out)}


def build_relations(vocab: Iterable[str], use_wordnet: bool, prefixes: list[str], suffixes: list[str]) -> Relations:
    """Relations among `vocab`: WordNet pairs, negation pairs, and the relations flipped through them."""
    vocab = set(vocab)
    synonyms, antonyms = wordnet_pairs(vocab) if use_wordnet else (set(), set())
    negations = sorted((w, b) for w in vocab if (b := negation_base(w, prefixes, suffixes)) is not None)
    syn_of: dict[str, set[str]] = defaultdict(set)
    ant_of: dict[str, set[str]] = defaultdict(set)
    for a, b in synonyms:
        syn_of[a].add(b)
        syn_of[b].add(a)
    for a, b in antonyms:
        ant_of[a].add(b)
        ant_of[b].add(a)
    flipped_ant = {(s, base) for neg, base in negations for s in syn_of[neg]}
    flipped_syn = {(a, base) for neg, base in negations for a in ant_of[neg]}
    return Relations(
        _symmetric(synonyms | flipped_syn, vocab),
        _symmetric(antonyms | set(negations) | flipped_ant, vocab),
        [(n, b) for n, b in negations if b in vocab],
    )
