"""The assignment CLI and loader: round trip with the cluster stage's routing, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clustering.assign import load_assigner, main, stable_bucket
from dataset.records import load_records
from run_config.errors import ConfigError


def test_cli_routes_like_the_cluster_stage(semantic_run, tmp_path, capsys):
    test_file = semantic_run / "clusters" / "cluster-0" / "test.jsonl"
    out = tmp_path / "routed.jsonl"
    assert (
        main(["--cluster-dir", str(semantic_run), "--input", str(test_file), "--output", str(out), "--device", "cpu"])
        == 0
    )
    routed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in routed] == [r.id for r in load_records(test_file)]
    assert {r["cluster"] for r in routed} == {0}  # the stage put exactly these rows in cluster 0
    assert "rows ->" in capsys.readouterr().out


def test_assigner_interface(semantic_run):
    assigner = load_assigner(semantic_run, device="cpu")
    assert assigner.num_clusters == 4 and assigner.centroids.shape == (4, 384)
    pairs = [("bank", "she sat on the bank of the river"), ("bank", "the bank raised its interest rates")]
    scores = assigner.scores(pairs)
    assert scores.shape == (2, 4) and np.all(np.abs(scores) <= 1.0 + 1e-5)
    assert assigner.assign(pairs).tolist() == np.argmax(scores, axis=1).tolist()
    assert assigner.assign([]).shape == (0,)


def test_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a cluster folder"):
        load_assigner(tmp_path)
    assert (
        main(
            [
                "--cluster-dir",
                str(tmp_path),
                "--input",
                str(tmp_path / "none.jsonl"),
                "--output",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 1
    )
    assert "none.jsonl: no such file" in capsys.readouterr().err


def test_random_partition_routing_is_stable():
    assert stable_bucket("bank", "river bank", 4) == stable_bucket("bank", "river bank", 4)
    assert len({stable_bucket(f"w{i}", "c", 4) for i in range(50)}) == 4
