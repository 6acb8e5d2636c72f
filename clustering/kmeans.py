"""Spherical k-means (balanced or plain) on L2-normalised rows, dense or sparse, with k-means++ init.

Points and centroids are unit vectors and the cost of a point in a cluster is its cosine distance
1 - x.c, so the training objective and the inference-time router (nearest centroid by cosine, paper
Alg. 3) agree. Memory is O(n*k + n*d): similarities are one (n, k) matrix product, centroid sums are
updated from the points that moved only. The per-row loops (sums, moves) are compiled with numba:
one pass over x, no gathered copy of the moved rows.

Balanced iterations are exact and cheap late in a fit: the E-step is the exact balanced assignment
(transport.py) and starts from the previous iteration's dual prices. Once the centroids move little,
the last full similarities are reused: |x.c - x.c'| <= |x| |c - c'| bounds their error, and only
points whose margin is within that bound of a cluster boundary get fresh similarities (see
`balanced_assignment_within`, which proves the result optimal or falls back to a full product).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit
from tqdm import tqdm

from clustering.transport import balanced_assignment, balanced_assignment_within

log = logging.getLogger(__name__)

Matrix = np.ndarray | sp.csr_matrix
# From this many matrix entries torch's threaded GEMM computes similarities; below it the one-thread
# compiled kernel is faster (thread start-up and waits dominate small products, badly on a busy machine).
THREADED_FROM = 1 << 24
FLOAT32_EPS = float(np.finfo(np.float32).eps)
Similarities = tuple[np.ndarray, np.ndarray]  # (n, k) similarities and the (k, d) centroids they are for


@dataclass(frozen=True)
class KMeansResult:
    """Labels, unit-norm centroids and the objective (sum of cosine distances) of one fit."""

    labels: np.ndarray
    centroids: np.ndarray
    objective: float
    n_iter: int
    converged: bool


def similarities(x: Matrix, centroids: np.ndarray) -> np.ndarray:
    """Return the (n, k) dot products of the rows of `x` with `centroids`."""
    if sp.issparse(x):
        return np.asarray(x @ centroids.T, dtype=np.float32)
    if x.shape[0] * x.shape[1] < THREADED_FROM:
        return _similarities_of_rows(_dense(x), np.arange(x.shape[0]), centroids)
    # Large inputs: torch's threaded GEMM (2-3x faster than NumPy's OpenBLAS on this skinny shape).
    import torch

    xt = torch.from_numpy(_dense(x))
    return (xt @ torch.from_numpy(_dense(centroids)).T).numpy()


def similarities_of(x: Matrix, idx: np.ndarray, centroids: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Return the (len(idx), k) similarities of the rows `idx` of `x` (sparse: gathering `chunk` rows at a time)."""
    if not sp.issparse(x):
        return _similarities_of_rows(_dense(x), idx, centroids)
    parts = np.array_split(idx, max(1, -(-len(idx) // chunk)))
    return np.concatenate([similarities(_rows(x, part), centroids) for part in parts])


def _similarities_of_rows(x: np.ndarray, idx: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    k = centroids.shape[0]
    padded = np.zeros((-(-k // 4) * 4, x.shape[1]), dtype=np.float32)  # blocks of four centroids
    padded[:k] = centroids
    return _dense_dots(x, np.asarray(idx, dtype=np.int64), padded)[:, :k]


@njit(cache=True, nogil=True, fastmath=True)
def _dense_dots(x: np.ndarray, idx: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Dot products of rows `idx` of x with centroids (k a multiple of 4): one pass, four accumulators per row.

    For the skinny (n, d) x (d, k) product of k-means this is ~2x faster than a single-threaded BLAS GEMM.
    """
    d = x.shape[1]
    out = np.empty((len(idx), centroids.shape[0]), dtype=np.float32)
    for r in range(len(idx)):
        point = x[idx[r]]
        for j in range(0, centroids.shape[0], 4):
            c0, c1, c2, c3 = centroids[j], centroids[j + 1], centroids[j + 2], centroids[j + 3]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for t in range(d):
                v = point[t]
                a0 += v * c0[t]
                a1 += v * c1[t]
                a2 += v * c2[t]
                a3 += v * c3[t]
            out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a0, a1, a2, a3
    return out


def _rows(x: Matrix, idx: np.ndarray) -> np.ndarray:
    rows = x[idx]
    return np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float32)


def normalize_rows(m: np.ndarray) -> np.ndarray:
    """Scale rows to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


@njit(cache=True, nogil=True, fastmath=True)
def _dense_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n, d = x.shape
    sums = np.zeros((k, d))
    squares = np.empty(n)
    for i in range(n):
        row, point, sq = sums[labels[i]], x[i], 0.0
        for t in range(d):
            v = np.float64(point[t])
            row[t] += v
            sq += v * v
        squares[i] = sq
    return sums, squares


@njit(cache=True, nogil=True)
def _dense_moves(x: np.ndarray, idx: np.ndarray, old: np.ndarray, new: np.ndarray, k: int) -> np.ndarray:
    delta = np.zeros((k, x.shape[1]))
    for p in range(len(idx)):
        point, out, into = x[idx[p]], delta[old[p]], delta[new[p]]
        for t in range(x.shape[1]):
            v = np.float64(point[t])
            out[t] -= v
            into[t] += v
    return delta


def sums_and_squares(x: Matrix, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the (k, d) float64 sums of the rows of each cluster and every row's squared norm (one pass)."""
    if not sp.issparse(x):
        return _dense_sums(_dense(x), labels, k)
    return cluster_sums(x, labels, k), np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64).ravel()


def cluster_sums(x: Matrix, labels: np.ndarray, k: int) -> np.ndarray:
    """Return the (k, d) float64 sums of the rows of each cluster (sparse: one one-hot product, no copy of x)."""
    if not sp.issparse(x):
        return _dense_sums(_dense(x), labels, k)[0]
    onehot = sp.csr_matrix(
        (np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))), shape=(k, len(labels))
    )
    return np.asarray((onehot @ x).toarray(), dtype=np.float64)


def moved_sums(x: Matrix, idx: np.ndarray, old: np.ndarray, new: np.ndarray, k: int) -> np.ndarray:
    """Return the (k, d) change of the cluster sums when rows `idx` move from labels `old` to `new`."""
    if not sp.issparse(x):
        return _dense_moves(_dense(x), idx, old, new, k)
    signs = np.zeros((k, len(idx)), dtype=np.float32)
    signs[new, np.arange(len(new))] = 1.0
    signs[old, np.arange(len(old))] = -1.0
    return np.asarray((x[idx].T @ signs.T).T, dtype=np.float64)


def _dense(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def kmeans_plusplus(x: Matrix, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick k initial centroids by greedy k-means++ (2 + ln k candidates per step, as scikit-learn)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centers = [_rows(x, np.array([rng.integers(n)]))[0]]
    closest = np.clip(1.0 - similarities(x, centers[0][None, :])[:, 0], 0.0, None).astype(np.float64)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point coincides with a centre: take distinct rows at random
            cand = rng.integers(n, size=1)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
            cand = np.minimum(cand, n - 1)
        cand_rows = _rows(x, cand)
        dist = np.clip(1.0 - similarities(x, cand_rows), 0.0, None)
        pot = np.minimum(closest[:, None], dist).sum(axis=0)
        best = int(np.argmin(pot))
        centers.append(cand_rows[best])
        closest = np.minimum(closest, dist[:, best])
    return normalize_rows(np.stack(centers))


def absolute_tol(squares: np.ndarray, total: np.ndarray, tol: float, d: int) -> float:
    """scikit-learn's convention: `tol` times the mean per-dimension variance of the rows
    (squared norms, sum `total`)."""
    mean = total / len(squares)  # no BLAS `@` here: NumPy's threaded dot stalls a busy machine for milliseconds
    return tol * max(float(squares.mean()) - float(np.square(mean).sum()), 0.0) / d


def _balanced_step(
    x: Matrix, centroids: np.ndarray, prices: np.ndarray | None, cached: Similarities | None, max_norm: float
) -> tuple[np.ndarray, np.ndarray, Similarities]:
    """Exact balanced labels for `centroids`, from the cached similarities when their error bound allows."""
    if cached is not None:
        sim, at = cached
        # |x.c - x.c'| <= |x| |c - c'|, plus float32 rounding of both products (<= d eps |x| each).
        drift = np.sqrt(((centroids.astype(np.float64) - at) ** 2).sum(axis=1))
        errors = max_norm * (drift + 2 * x.shape[1] * FLOAT32_EPS)
        solved = balanced_assignment_within(-sim, prices, errors, lambda idx: -similarities_of(x, idx, centroids))
        if solved is not None:
            return *solved, cached
    sim = similarities(x, centroids)
    return *balanced_assignment(-sim, prices), (sim, centroids)


def _fit_once(
    x: Matrix, centroids: np.ndarray, balanced: bool, max_iter: int, tol: float, progress: bool
) -> KMeansResult:
    n, k = x.shape[0], centroids.shape[0]
    max_norm, tol_abs = 0.0, 0.0
    labels = np.full(n, -1, dtype=np.int64)
    sums = np.zeros((k, x.shape[1]))
    prices = cached = None
    converged = False
    bar = tqdm(
        range(1, max_iter + 1),
        desc="balanced k-means" if balanced else "k-means",
        unit=" it",
        disable=not progress,
        mininterval=1.0,
    )
    it = 0
    for it in bar:
        if balanced:
            new_labels, prices, cached = _balanced_step(x, centroids, prices, cached, max_norm)
        else:
            new_labels = np.argmax(similarities(x, centroids), axis=1).astype(np.int64)
        moved = np.flatnonzero(new_labels != labels)
        changed = len(moved)
        if it == 1:  # the first pass over x also gives the row norms (tolerance, similarity error bounds)
            sums, squares = sums_and_squares(x, new_labels, k)
            max_norm = math.sqrt(float(squares.max()))
            tol_abs = absolute_tol(squares, sums.sum(axis=0), tol, x.shape[1])
        elif changed > n // 2:
            sums = cluster_sums(x, new_labels, k)
        elif changed:  # update the sums from the moved points only, not from another pass over x
            sums += moved_sums(x, moved, labels[moved], new_labels[moved], k)
        labels = new_labels
        empty = ~sums.any(axis=1)
        new_centroids = normalize_rows(np.where(empty[:, None], centroids, sums))
        shift = float(((new_centroids - centroids) ** 2).sum())
        centroids = new_centroids
        bar.set_postfix(changed=changed, shift=f"{shift:.2e}", refresh=False)
        if changed == 0 or shift <= tol_abs:
            converged = True
            break
    objective = float(n - (centroids * sums).sum())  # sum of 1 - x.c over points = n - sum_j c_j . (sum of x in j)
    return KMeansResult(labels, centroids, objective, it, converged)


def spherical_kmeans(
    x: Matrix,
    k: int,
    *,
    balanced: bool = True,
    seed: int = 42,
    max_iter: int = 1000,
    tol: float = 1e-8,
    n_init: int = 1,
    init: np.ndarray | None = None,
    progress: bool = True,
) -> KMeansResult:
    """Cluster the unit-norm rows of `x` into k clusters; keep the best of `n_init` seeded runs.

    Balanced: cluster sizes differ by at most one (exact assignment each iteration, see transport.py).
    `init` (k, d) replaces k-means++ (one run). The result is deterministic for a given seed.
    """
    n = x.shape[0]
    if k < 1 or n < k:
        raise ValueError(f"cannot make {k} clusters from {n} rows")
    if not sp.issparse(x):
        x = _dense(x)  # once, not in every product of every iteration (a no-op for float32 input)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(1 if init is not None else n_init)]
    best: KMeansResult | None = None
    for rng in rngs:
        start = normalize_rows(np.asarray(init, dtype=np.float32)) if init is not None else kmeans_plusplus(x, k, rng)
        result = _fit_once(x, start, balanced, max_iter, tol, progress)
        log.info(
            "%s k-means: %d iterations, objective %.4f%s",
            "balanced" if balanced else "plain",
            result.n_iter,
            result.objective,
            "" if result.converged else " (max_iter reached)",
        )
        if best is None or result.objective < best.objective:
            best = result
    return best


def compile_kernels() -> None:
    """Compile the numba kernels once (cached on disk next to the code): a first fit then starts at once.

    Setup calls this; without it the first fit of a fresh install spends ~30 s compiling.
    """
    rng = np.random.default_rng(0)
    x = normalize_rows(rng.standard_normal((600, 8)).astype(np.float32))
    fit = spherical_kmeans(x, 3, progress=False)
    moved_sums(x, np.arange(5), fit.labels[:5], (fit.labels[:5] + 1) % 3, 3)
    cost = -similarities(x, fit.centroids).astype(np.float64)
    _, prices = balanced_assignment(cost - np.array([1.0, 0.0, 0.0]))  # an excess to move: the SSP path
    balanced_assignment_within(cost, prices, np.full(3, 1e-3), lambda idx: cost[idx])
