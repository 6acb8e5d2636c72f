"""Spherical k-means: blobs recovered, balance for awkward n, determinism, sparse input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from clustering.kmeans import (
    cluster_sums,
    kmeans_plusplus,
    moved_sums,
    normalize_rows,
    similarities,
    similarities_of,
    spherical_kmeans,
    sums_and_squares,
)
from clustering.transport import balanced_assignment


def blobs(sizes: list[int], dim: int = 32, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = normalize_rows(rng.normal(size=(len(sizes), dim)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centers[truth] + spread * rng.normal(size=(len(truth), dim))
    perm = rng.permutation(len(truth))
    return normalize_rows(x[perm]), truth[perm]


def test_separated_blobs_are_recovered_exactly_with_equal_sizes():
    x, truth = blobs([250, 250, 250, 250])
    result = spherical_kmeans(x, 4, progress=False)
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert np.bincount(result.labels).tolist() == [250] * 4
    assert result.converged
    assert np.allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-6)


def test_awkward_n_sizes_differ_by_at_most_one():
    x, _ = blobs([700, 200, 101], seed=1)  # n = 1,001, very unequal blobs
    result = spherical_kmeans(x, 4, progress=False)
    assert sorted(np.bincount(result.labels, minlength=4).tolist()) == [250, 250, 250, 251]


def test_plain_kmeans_keeps_unequal_blobs():
    x, truth = blobs([600, 150, 50], seed=2)
    result = spherical_kmeans(x, 3, balanced=False, progress=False)
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert sorted(np.bincount(result.labels).tolist()) == [50, 150, 600]
    balanced = spherical_kmeans(x, 3, progress=False)
    assert balanced.objective > result.objective  # balance costs cohesion on unequal blobs


def test_deterministic_for_a_seed_and_best_of_n_init():
    x, _ = blobs([120, 90, 90], spread=0.6, seed=3)
    a = spherical_kmeans(x, 3, seed=42, progress=False)
    b = spherical_kmeans(x, 3, seed=42, progress=False)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    several = spherical_kmeans(x, 3, seed=42, n_init=4, progress=False)
    assert several.objective <= a.objective + 1e-9


def test_sparse_rows_match_dense_rows():
    x, _ = blobs([100, 100, 100], seed=4)
    x[np.abs(x) < 0.15] = 0.0
    x = normalize_rows(x)
    dense = spherical_kmeans(x, 3, progress=False)
    sparse = spherical_kmeans(sp.csr_matrix(x), 3, progress=False)
    assert adjusted_rand_score(dense.labels, sparse.labels) == 1.0


def test_kmeans_plusplus_spreads_the_centres():
    x, truth = blobs([50, 50, 50, 50], seed=5)
    centres = kmeans_plusplus(x, 4, np.random.default_rng(0))
    nearest_blob = {int(truth[np.argmax(x @ c)]) for c in centres}
    assert nearest_blob == {0, 1, 2, 3}


@pytest.mark.parametrize("k", [1, 4, 7])
def test_compiled_products_match_numpy(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((513, 37)).astype(np.float32)
    centroids = rng.standard_normal((k, 37)).astype(np.float32)
    assert np.allclose(similarities(x, centroids), x @ centroids.T, atol=1e-4)
    idx = np.array([512, 0, 7, 7])
    assert np.allclose(similarities_of(x, idx, centroids), x[idx] @ centroids.T, atol=1e-4)
    labels = rng.integers(0, k, len(x))
    sums, squares = sums_and_squares(x, labels, k)
    assert np.allclose(sums, [x[labels == j].sum(axis=0) for j in range(k)], atol=1e-4)
    assert np.allclose(squares, (x.astype(np.float64) ** 2).sum(axis=1))


def test_moved_sums_is_the_change_of_the_cluster_sums():
    x, _ = blobs([40, 30, 30], seed=6)
    rng = np.random.default_rng(0)
    old = rng.integers(0, 3, len(x))
    new = old.copy()
    moved = rng.choice(len(x), 25, replace=False)
    new[moved] = (old[moved] + rng.integers(1, 3, 25)) % 3
    expected = cluster_sums(x, new, 3) - cluster_sums(x, old, 3)
    assert np.allclose(moved_sums(x, moved, old[moved], new[moved], 3), expected, atol=1e-5)
    sparse = sp.csr_matrix(x)
    assert np.allclose(moved_sums(sparse, moved, old[moved], new[moved], 3), expected, atol=1e-5)


def test_every_iteration_is_the_exact_balanced_assignment():
    # Reference: plain Lloyd iterations with a full similarity product and a full exact solve each time.
    # The fit reuses earlier similarities when its error bound allows; the iterates must not change.
    x, _ = blobs([1600, 1300, 1101], spread=0.6, seed=7)  # overlapping blobs: ~40 iterations, n mod k > 0
    init = kmeans_plusplus(x, 4, np.random.default_rng(1))
    fast = spherical_kmeans(x, 4, init=init, progress=False)
    centroids, labels, prices = init, None, None
    for _ in range(fast.n_iter):
        labels, prices = balanced_assignment(-(x @ centroids.T), prices)
        centroids = normalize_rows(cluster_sums(x, labels, 4))
    assert np.array_equal(fast.labels, labels)
    assert np.allclose(fast.centroids, centroids, atol=1e-5)
    assert fast.objective == pytest.approx(float((1 - (x * centroids[labels]).sum(axis=1)).sum()), rel=1e-6)
