"""Fixtures of the inference tests: real Urban / WordNet rows, SmolLM2-135M loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dataset.readers import iter_3dex_csv
from dataset.records import Record

# One intra-op thread: on a shared 2-core machine, OpenMP threads of concurrent jobs thrash (10x slower).
torch.set_num_threads(1)


def _write(path: Path, records: list[Record]) -> Path:
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def urban_records(data_3dex) -> list[Record]:
    """The first 400 real Urban test records (3D-EX)."""
    out = []
    for _, item in iter_3dex_csv(data_3dex / "Urban_test.csv"):
        if isinstance(item, Record):
            out.append(item)
        if len(out) == 400:
            break
    return out


@pytest.fixture
def urban_rows(urban_records, tmp_path) -> Path:
    """Six real Urban rows as a preprocessed JSONL file."""
    return _write(tmp_path / "urban_test.jsonl", urban_records[:6])


@pytest.fixture(scope="session")
def wordnet_rows(wordnet_lexicon, tmp_path_factory) -> Path:
    """The first 24 real rows of the embedded WordNet test split."""
    path = tmp_path_factory.mktemp("wn") / "test.jsonl"
    with open(wordnet_lexicon / "test.jsonl", encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(24)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smol_backend(smollm2_dir):
    """The local backend on SmolLM2-135M-Instruct (CPU, float32), loaded once."""
    from inference.local import LocalBackend

    return LocalBackend.from_path(str(smollm2_dir), device="cpu", batch_size=4)
