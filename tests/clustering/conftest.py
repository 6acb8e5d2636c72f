"""Small real inputs for the clustering tests: slices of the embedded WordNet lexicon and of Urban."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dataset.readers import iter_3dex_csv
from dataset.records import Record, read_records
from main import main as toolkit_main


def _write(path: Path, records: list[Record]) -> Path:
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def wordnet_small(wordnet_lexicon, tmp_path_factory) -> Path:
    """~800 real WordNet rows: every 60th train row, every 50th valid and test row."""
    rows = [
        r
        for split, step in (("train", 60), ("valid", 50), ("test", 50))
        for i, r in enumerate(read_records(wordnet_lexicon / f"{split}.jsonl"))
        if i % step == 0
    ]
    return _write(tmp_path_factory.mktemp("wordnet") / "all.jsonl", rows)


@pytest.fixture(scope="session")
def urban_train(data_3dex, tmp_path_factory) -> Path:
    """The first 2,000 real Urban test rows, relabelled as a training split to be clustered."""
    rows = []
    for _, item in iter_3dex_csv(data_3dex / "Urban_test.csv"):
        if isinstance(item, Record):
            rows.append(dataclasses.replace(item, split="train"))
        if len(rows) == 2000:
            break
    return _write(tmp_path_factory.mktemp("urban") / "all.jsonl", rows)


@pytest.fixture(scope="session")
def semantic_run(wordnet_small, tmp_path_factory) -> Path:
    """Definition-embedded clusters (the original recipe) routed by term + context."""
    out = tmp_path_factory.mktemp("semantic")
    assert (
        toolkit_main(
            [
                "cluster",
                "--input",
                str(wordnet_small),
                "--num-clusters",
                "4",
                "--output-dir",
                str(out),
                "--text-field",
                "definition",
                "--cache-dir",
                str(out.parent / "emb-cache"),
            ]
        )
        == 0
    )
    return out
