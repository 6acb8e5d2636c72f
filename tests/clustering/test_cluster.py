"""Cluster stage end to end on real rows with all-MiniLM-L6-v2; ablation partitions; CLI errors; configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clustering.assign import load_assigner
from clustering.cluster import main
from clustering.config import ClusterConfig
from dataset.records import load_records
from run_config.loader import load_config


def run(*argv) -> int:
    return main([str(a) for a in argv])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_outputs_are_complete_and_balanced(semantic_run, wordnet_small):
    records = load_records(wordnet_small)
    train = [r for r in records if r.split == "train"]
    assignments = read_jsonl(semantic_run / "assignments.jsonl")
    assert [a["id"] for a in assignments] == [r.id for r in train]
    sizes = np.bincount([a["cluster"] for a in assignments], minlength=4)
    assert sizes.max() - sizes.min() <= 1
    report = json.loads((semantic_run / "report.json").read_text())
    assert report["sizes"] == sizes.tolist()
    assert report["cohesion"]["mean"] > report["cohesion"]["baseline_all_points"]
    assert 0 < report["separation"]["mean"] < 2 and len(report["separation"]["per_pair"]) == 6
    assert report["kmeans"]["converged"]
    assert all(len(terms) == 8 for terms in report["examples"])
    for split in ("train", "valid", "test"):
        parts = [load_records(semantic_run / "clusters" / f"cluster-{j}" / f"{split}.jsonl") for j in range(4)]
        assert sorted(r.id for p in parts for r in p) == sorted(r.id for r in records if r.split == split)
        assert report["routed_sizes"].get(split, [len(p) for p in parts]) == [len(p) for p in parts]
    centroids = np.load(semantic_run / "centroids.npy")
    assert centroids.shape == (4, 384)
    embedder = json.loads((semantic_run / "embedder.json").read_text())
    assert embedder["text_field"] == "definition" and embedder["query_text_field"] == "term_context"
    assert (semantic_run / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((semantic_run / "manifest.json").read_text())["stage"] == "cluster"


def test_valid_rows_are_routed_by_term_and_context_with_reported_agreement(semantic_run, wordnet_small):
    report = json.loads((semantic_run / "report.json").read_text())
    agreement = report["valid_routing_agreement"]
    valid = [r for r in load_records(wordnet_small) if r.split == "valid"]
    assert agreement["rows"] == len(valid) and 0.0 < agreement["agreement"] < 1.0
    routed = load_assigner(semantic_run, device="cpu").assign([(r.term, r.context) for r in valid])
    in_files = {
        r.id: j for j in range(4) for r in load_records(semantic_run / "clusters" / f"cluster-{j}" / "valid.jsonl")
    }
    assert [in_files[r.id] for r in valid] == routed.tolist()


def test_rerun_is_skipped_and_cache_is_reused(semantic_run, wordnet_small, capsys, monkeypatch):
    assert (
        run(
            "--input",
            wordnet_small,
            "--num-clusters",
            4,
            "--output-dir",
            semantic_run,
            "--text-field",
            "definition",
            "--cache-dir",
            semantic_run.parent / "emb-cache",
        )
        == 0
    )
    assert "is up to date" in capsys.readouterr().out
    cached = sorted((semantic_run.parent / "emb-cache").glob("emb-*.npy"))
    assert len(cached) == 1
    manifest = json.loads(cached[0].with_suffix(".json").read_text())
    assert manifest["text_field"] == "definition" and manifest["rows"] == len(
        [r for r in load_records(wordnet_small) if r.split == "train"]
    )


@pytest.mark.slow
def test_urban_rows_cluster_by_term_and_context(urban_train, tmp_path):
    assert run("--input", urban_train, "--num-clusters", 4, "--output-dir", tmp_path, "--no-plot") == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sizes"] == [500, 500, 500, 500]
    assert report["cohesion"]["mean"] > report["cohesion"]["baseline_all_points"]
    assert report["valid_routing_agreement"]["rows"] == 0  # no valid rows in this input
    # Routing a training row's own (term, context) re-embeds it exactly as at training time ...
    train = load_records(urban_train)[:300]
    cached = np.load(next((tmp_path / "embeddings").glob("emb-*.npy")))[:300]
    centroids = np.load(tmp_path / "centroids.npy")
    routed = load_assigner(tmp_path, device="cpu").assign([(r.term, r.context) for r in train])
    assert routed.tolist() == np.argmax(cached @ centroids.T, axis=1).tolist()
    # ... and returns its own cluster unless balancing moved it to a farther centroid.
    labels = np.array([a["cluster"] for a in read_jsonl(tmp_path / "assignments.jsonl")])[:300]
    assert np.mean(routed == labels) > 0.8 and report["train_nearest_centroid_agreement"] > 0.8


@pytest.mark.parametrize("partition,k", [("lexical", 4), ("random", 4), ("none", 1), ("semantic", 1)])
def test_ablation_partitions(partition, k, wordnet_small, semantic_run, tmp_path):
    argv = [
        "--input",
        wordnet_small,
        "--num-clusters",
        k,
        "--output-dir",
        tmp_path,
        "--partition",
        partition,
        "--cache-dir",
        semantic_run.parent / "emb-cache-term-context",
    ]
    assert run(*argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    sizes = report["sizes"]
    assert len(sizes) == k and max(sizes) - min(sizes) <= 1
    valid = [r for r in load_records(wordnet_small) if r.split == "valid"]
    routed = load_assigner(tmp_path, device="cpu").assign([(r.term, r.context) for r in valid])
    assert routed.shape == (len(valid),) and set(routed.tolist()) <= set(range(k))
    assert report["routed_sizes"]["valid"] == np.bincount(routed, minlength=k).tolist()
    if partition == "lexical":
        assert report["cohesion"]["mean"] > report["cohesion"]["baseline_all_points"]
    if partition == "random":
        assert len(set(routed.tolist())) == k


def test_plain_kmeans_ablation(wordnet_small, semantic_run, tmp_path):
    assert (
        run(
            "--input",
            wordnet_small,
            "--output-dir",
            tmp_path,
            "--algorithm",
            "kmeans",
            "--num-clusters",
            4,
            "--cache-dir",
            semantic_run.parent / "emb-cache-term-context",
            "--no-plot",
        )
        == 0
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kmeans"]["algorithm"] == "kmeans" and sum(report["sizes"]) == report["train_rows"]
    assert report["train_nearest_centroid_agreement"] == 1.0
    assert report["valid_routing_agreement"]["agreement"] == 1.0  # same recipe at train and test time


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["--input", "{tmp}/missing.jsonl", "--output-dir", "{tmp}/o"], 1, "missing.jsonl: no such file"),
        (["--input", "{bad}", "--output-dir", "{tmp}/o"], 1, "bad.jsonl:2: definition: missing"),
        (["--input", "{few}", "--output-dir", "{tmp}/o", "--num-clusters", "4"], 1, "need at least num_clusters=4"),
        (["--input", "{few}", "--output-dir", "{tmp}/o", "--partition", "none"], 2, "needs num_clusters 1"),
        (["--input", "{few}", "--output-dir", "{tmp}/o", "--num-clusters", "0"], 2, "num_clusters"),
        (["--input", "{few}", "--output-dir", "{tmp}/o", "--set", "num_clustres=2"], 2, "did you mean num_clusters"),
        (
            ["--input", "{few}", "--output-dir", "{tmp}/o", "--embedder", "/nonexistent/model", "--num-clusters", "1"],
            2,
            "cannot load",
        ),
    ],
)
def test_cli_errors(argv, code, message, tmp_path, capsys):
    row = {
        "id": "a",
        "term": "bank",
        "context": "the bank of the river",
        "definition": "land by a river",
        "source": "WordNet",
        "split": "train",
    }
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({"term": "x", "context": "y"}) + "\n")
    (tmp_path / "few.jsonl").write_text(json.dumps(row) + "\n")
    subst = {"tmp": tmp_path, "bad": tmp_path / "bad.jsonl", "few": tmp_path / "few.jsonl"}
    assert run(*[a.format(**subst) for a in argv]) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_original_flag_names_are_accepted(tmp_path):
    legacy = tmp_path / "legacy.json"
    legacy.write_text(
        json.dumps(
            {
                "input": "all.jsonl",
                "output_dir": "o",
                "cluster_centroids": 8,
                "clusterer": "kmeans",
                "split_by": "lexical",
                "sample_num": 10000,
            }
        )
    )
    cfg = load_config(legacy, ClusterConfig)
    assert (cfg.num_clusters, cfg.algorithm, cfg.partition) == (8, "kmeans", "lexical")
