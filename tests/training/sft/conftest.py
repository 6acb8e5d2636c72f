"""Fixtures of the expert-training tests."""

from __future__ import annotations

import pytest

from tests.helpers.train import urban_records, write_split


@pytest.fixture
def clusters(data_3dex, tmp_path):
    """The clustering stage's layout: DIR/clusters/cluster-{k}/{train,valid}.jsonl (two clusters)."""
    records = urban_records(data_3dex, 80)
    root = tmp_path / "clustering"
    for k, part in enumerate((records[:40], records[40:])):
        write_split(root / "clusters" / f"cluster-{k}" / "train.jsonl", part[:32], "train")
        write_split(root / "clusters" / f"cluster-{k}" / "valid.jsonl", part[32:], "valid")
    return root
