"""Lexical relations from the offline WordNet plus checked morphological negation."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dskd.relations import Relations, build_relations, negation_base

PREFIXES = ["un", "in", "im", "il", "ir", "dis", "non"]
SUFFIXES = ["less"]
VOCAB = [
    "discontinue",
    "continue",
    "quit",
    "good",
    "bad",
    "evil",
    "kind",
    "unkind",
    "cruel",
    "friendly",
    "fault",
    "faultless",
    "perfect",
    "inside",
    "side",
    "discover",
    "cover",
    "possible",
    "impossible",
    "large",
    "small",
    "big",
    "unless",
]


@pytest.fixture(scope="module")
def relations() -> Relations:
    return build_relations(VOCAB, True, PREFIXES, SUFFIXES)


def test_wordnet_antonyms_and_synonyms(relations: Relations) -> None:
    assert "bad" in relations.antonyms["good"] and "good" in relations.antonyms["bad"]
    assert "small" in relations.antonyms["large"]
    assert "big" in relations.synonyms["large"]


def test_negation_pairs_are_checked_not_blind(relations: Relations) -> None:
    assert ("unkind", "kind") in relations.negations and ("faultless", "fault") in relations.negations
    assert ("impossible", "possible") in relations.negations
    assert "kind" in relations.antonyms["unkind"] and "fault" in relations.antonyms["faultless"]
    negated = {n for n, _ in relations.negations}
    assert not negated & {"inside", "discover", "unless"}
    assert negation_base("inside", PREFIXES, SUFFIXES) is None


def test_negation_flips_relations_onto_the_base(relations: Relations) -> None:
    # Reference Table 1: quit ~ discontinue (synonyms) and discontinue = not continue -> quit / continue antonyms.
    assert ("discontinue", "continue") in relations.negations
    assert "quit" in relations.synonyms["discontinue"]
    assert "quit" in relations.antonyms["continue"]


def test_relations_stay_in_vocabulary_and_round_trip(relations: Relations, tmp_path: Path) -> None:
    vocab = set(VOCAB)
    for table in (relations.synonyms, relations.antonyms):
        assert all(w in vocab and set(others) <= vocab for w, others in table.items())
    relations.save(tmp_path)
    assert Relations.load(tmp_path) == relations


def test_without_wordnet_only_negation_pairs() -> None:
    rel = build_relations(["kind", "unkind", "good", "bad"], False, PREFIXES, SUFFIXES)
    assert rel.antonyms == {"kind": ["unkind"], "unkind": ["kind"]} and rel.synonyms == {}
