"""Evaluation fixtures: the real Urban test split, preprocessed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset.preprocess import main as preprocess_main
from dataset.records import Record, load_records


@pytest.fixture(scope="session")
def urban_jsonl(data_3dex, tmp_path_factory) -> Path:
    """all.jsonl of the 15,375 Urban test records (preprocessed from the real CSV)."""
    out = tmp_path_factory.mktemp("urban")
    assert preprocess_main(["--input", str(data_3dex / "Urban_test.csv"), "--output-dir", str(out)]) == 0
    return out / "all.jsonl"


@pytest.fixture(scope="session")
def urban(urban_jsonl) -> list[Record]:
    return load_records(urban_jsonl)


@pytest.fixture(scope="session")
def by_term(urban) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in urban:
        out.setdefault(r.term, []).append(r)
    return out
