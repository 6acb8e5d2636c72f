"""Cluster quality (cohesion and separation as in paper Tables 7/8), example terms and a 2-D scatter plot."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from clustering.kmeans import Matrix, normalize_rows, similarities, sums_and_squares
from run_config.runtime import atomic_open

SILHOUETTE_SAMPLE = 5000
PLOT_SAMPLE = 20000


def mean_pairwise_cosine(total: np.ndarray, sq_norm_sum: float, m: int) -> float:
    """Mean cosine similarity over distinct pairs of m unit vectors, from their sum (exact, O(d))."""
    return float((total @ total - sq_norm_sum) / (m * (m - 1))) if m > 1 else 1.0


def cluster_quality(x: Matrix, labels: np.ndarray, k: int) -> dict:
    """Return sizes, cohesion and separation of a partition of the unit-norm rows of `x`.

    cohesion: mean pairwise cosine similarity inside each cluster (higher = tighter); its baseline is
    the same quantity over all points (what a random partition gets). separation: cosine distance
    between the (normalised) centroids of each pair (higher = farther apart). The paper's Tables 7/8
    numbers are Euclidean: mean point-to-cluster-mean distance (intra) and mean distance between
    cluster means (inter), reported as `paper_intra_distance` / `paper_inter_distance`.
    """
    n = x.shape[0]
    sizes = np.bincount(labels, minlength=k)
    sums, sq = sums_and_squares(x, labels, k)
    sq_by = np.bincount(labels, weights=sq, minlength=k)
    cohesion = [mean_pairwise_cosine(sums[j], sq_by[j], int(sizes[j])) for j in range(k)]
    baseline = mean_pairwise_cosine(sums.sum(axis=0), float(sq.sum()), n)
    means = sums / np.maximum(sizes, 1)[:, None]
    dots = similarities(x, means.astype(np.float32)).astype(np.float64)
    own = dots[np.arange(n), labels]
    dist = np.sqrt(np.clip(sq - 2 * own + (means**2).sum(axis=1)[labels], 0.0, None))
    intra = (np.bincount(labels, weights=dist, minlength=k) / np.maximum(sizes, 1)).tolist()
    unit = normalize_rows(means)
    pairs = list(combinations(range(k), 2))
    separation = {f"{a}-{b}": float(1.0 - unit[a] @ unit[b]) for a, b in pairs}
    inter = {f"{a}-{b}": float(np.linalg.norm(means[a] - means[b])) for a, b in pairs}
    return {
        "num_clusters": k,
        "rows": n,
        "sizes": sizes.tolist(),
        "cohesion": {"per_cluster": cohesion, "mean": float(np.mean(cohesion)), "baseline_all_points": baseline},
        "separation": {"per_pair": separation, "mean": float(np.mean(list(separation.values()))) if pairs else 0.0},
        "paper_intra_distance": {"per_cluster": intra, "mean": float(np.mean(intra))},
        "paper_inter_distance": {"per_pair": inter, "mean": float(np.mean(list(inter.values()))) if pairs else 0.0},
    }


def silhouette(x: Matrix, labels: np.ndarray, seed: int) -> float | None:
    """Cosine silhouette on a seeded sample of at most 5,000 rows (None for a single cluster)."""
    from sklearn.metrics import silhouette_score

    if len(set(labels.tolist())) < 2:
        return None
    return float(
        silhouette_score(x, labels, metric="cosine", sample_size=min(SILHOUETTE_SAMPLE, x.shape[0]), random_state=seed)
    )


def example_terms(
    x: Matrix, labels: np.ndarray, centroids: np.ndarray, terms: Sequence[str], per_cluster: int
) -> list[list[str]]:
    """Return the distinct terms closest to each centroid (the most typical members)."""
    k = centroids.shape[0]
    sim = similarities(x, centroids)[np.arange(len(labels)), labels]
    out = []
    for j in range(k):
        members = np.flatnonzero(labels == j)
        picked: list[str] = []
        for i in members[np.argsort(-sim[members], kind="stable")]:
            if terms[i] not in picked:
                picked.append(terms[i])
            if len(picked) == per_cluster:
                break
        out.append(picked)
    return out


def plot_scatter(x: Matrix, labels: np.ndarray, path: Path, seed: int, title: str) -> None:
    """Save a PCA (TruncatedSVD for sparse input) 2-D scatter of a seeded sample, coloured by cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA, TruncatedSVD

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(x.shape[0], size=min(PLOT_SAMPLE, x.shape[0]), replace=False))
    sample = x[idx]
    if sample.shape[1] < 2:
        return
    reducer = TruncatedSVD(2, random_state=seed) if sp.issparse(sample) else PCA(2, random_state=seed)
    xy = reducer.fit_transform(sample)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for j in np.unique(labels[idx]):
        m = labels[idx] == j
        ax.scatter(xy[m, 0], xy[m, 1], s=3, alpha=0.5, label=f"cluster {j}")
    ax.set_title(title)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
