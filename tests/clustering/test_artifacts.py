"""The cluster folder format: one set of names that the cluster stage writes and the MoE and SFT read."""

from __future__ import annotations

import numpy as np

from clustering.artifacts import (
    ASSIGNER_FILES,
    CENTROIDS_FILE,
    EMBEDDER_FILE,
    TFIDF_FILE,
    assigner_files,
    cluster_folders,
    cluster_split_file,
    missing_assigner_files,
)


def test_cluster_folders_come_in_numeric_order_and_strays_are_ignored(tmp_path):
    for k in (10, 2, 0):
        cluster_split_file(tmp_path, k, "train").parent.mkdir(parents=True)
    (tmp_path / "clusters" / "cluster-3.tmp").mkdir()  # not a cluster folder
    (tmp_path / "clusters" / "cluster-4").write_text("")  # a file, not a folder
    assert [(k, p.name) for k, p in cluster_folders(tmp_path)] == [
        (0, "cluster-0"),
        (2, "cluster-2"),
        (10, "cluster-10"),
    ]
    assert cluster_split_file(tmp_path, 2, "valid") == tmp_path / "clusters" / "cluster-2" / "valid.jsonl"


def test_assigner_files_required_and_optional(tmp_path):
    assert missing_assigner_files(tmp_path) == [tmp_path / n for n in ASSIGNER_FILES]
    np.save(tmp_path / CENTROIDS_FILE, np.eye(2, dtype=np.float32))
    assert missing_assigner_files(tmp_path) == [tmp_path / EMBEDDER_FILE]
    (tmp_path / EMBEDDER_FILE).write_text("{}")
    assert missing_assigner_files(tmp_path) == [] and assigner_files(tmp_path) == [CENTROIDS_FILE, EMBEDDER_FILE]
    (tmp_path / TFIDF_FILE).write_text("{}")
    assert assigner_files(tmp_path) == [CENTROIDS_FILE, EMBEDDER_FILE, TFIDF_FILE]
