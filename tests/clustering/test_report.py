"""Cohesion and separation against hand computation."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp

from clustering.kmeans import normalize_rows
from clustering.report import cluster_quality, example_terms


def by_hand(x: np.ndarray, labels: np.ndarray, k: int) -> dict:
    cohesion, intra, means = [], [], []
    for j in range(k):
        members = x[labels == j]
        pairs = [float(a @ b) for a, b in combinations(members, 2)]
        cohesion.append(sum(pairs) / len(pairs))
        mean = members.mean(axis=0)
        means.append(mean)
        intra.append(float(np.mean([np.linalg.norm(p - mean) for p in members])))
    sep = [
        1 - float(means[a] @ means[b] / np.linalg.norm(means[a]) / np.linalg.norm(means[b]))
        for a, b in combinations(range(k), 2)
    ]
    inter = [float(np.linalg.norm(means[a] - means[b])) for a, b in combinations(range(k), 2)]
    everything = [float(a @ b) for a, b in combinations(x, 2)]
    return {
        "cohesion": cohesion,
        "baseline": sum(everything) / len(everything),
        "separation": sep,
        "intra": intra,
        "inter": inter,
    }


@pytest.mark.parametrize("sparse", [False, True])
def test_quality_matches_hand_computation(sparse):
    x = normalize_rows(
        np.array(
            [[1, 0, 0], [0.9, 0.1, 0], [0.8, 0, 0.2], [0, 1, 0], [0, 0.7, 0.3], [0, 0, 1], [0.1, 0, 0.9]],
            dtype=np.float64,
        )
    )
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    q = cluster_quality(sp.csr_matrix(x) if sparse else x, labels, 3)
    hand = by_hand(x.astype(np.float64), labels, 3)
    assert q["sizes"] == [3, 2, 2]
    assert q["cohesion"]["per_cluster"] == pytest.approx(hand["cohesion"], abs=1e-6)
    assert q["cohesion"]["baseline_all_points"] == pytest.approx(hand["baseline"], abs=1e-6)
    assert list(q["separation"]["per_pair"].values()) == pytest.approx(hand["separation"], abs=1e-6)
    assert q["separation"]["mean"] == pytest.approx(np.mean(hand["separation"]), abs=1e-6)
    assert q["paper_intra_distance"]["per_cluster"] == pytest.approx(hand["intra"], abs=1e-6)
    assert list(q["paper_inter_distance"]["per_pair"].values()) == pytest.approx(hand["inter"], abs=1e-6)
    assert q["cohesion"]["mean"] > q["cohesion"]["baseline_all_points"]


def test_example_terms_are_distinct_and_central():
    x = normalize_rows(np.array([[1, 0], [0.9, 0.2], [0.9, 0.2], [0.5, 0.5], [0, 1]], dtype=np.float32))
    labels = np.array([0, 0, 0, 0, 1])
    centroids = np.array([[1, 0], [0, 1]], dtype=np.float32)
    out = example_terms(x, labels, centroids, ["a", "b", "b", "c", "d"], 2)
    assert out == [["a", "b"], ["d"]]
