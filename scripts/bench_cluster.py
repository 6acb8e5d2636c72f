"""Benchmark balanced k-means: this implementation vs `k-means-constrained` (min-cost flow), then 1M x 768.

Part 1 runs both on the same 10,000 x 384 unit vectors, k = 4, from the same k-means++ centres, and
prints the speed ratio (goal >= 20x) and the inertia ratio (ours / theirs, Euclidean SSE; goal <= 1.01).
Part 2 clusters 1,000,000 x 768 synthetic unit vectors (k = 4) in a child process and prints its time
and peak RSS (goal: under 10 minutes), then runs faiss's plain (unbalanced) spherical k-means on the same
points from the same k-means++ start for the same number of iterations, on all points
(`max_points_per_centroid` = n, no subsampling): what balance costs at scale (goal: ours <= 1.5 x faiss).
The last lines are `big_ratio=<ours / faiss> goal=1.5` and `ratio=<speed ratio> goal=20`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from clustering.kmeans import kmeans_plusplus, spherical_kmeans

ROOT = Path(__file__).resolve().parent.parent

SPEED_GOAL, INERTIA_GOAL, BIG_SECONDS_GOAL, FAISS_GOAL = 20.0, 1.01, 600.0, 1.5
REPEATS = 5
T = TypeVar("T")


def synthetic(n: int, d: int, seed: int, modes: int = 16, noise: float = 1.5, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around `modes` random directions (a stand-in for sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((modes, d), dtype=np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        part = centres[rng.integers(modes, size=m)] + noise * rng.standard_normal((m, d), dtype=np.float32)
        x[start : start + m] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x


def inertia(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Euclidean SSE of points to their cluster means (the objective k-means-constrained minimises)."""
    return float(sum(((x[labels == j] - x[labels == j].mean(axis=0)) ** 2).sum() for j in range(k)))


def timed(repeats: int, fn: Callable[[], T]) -> tuple[list[float], T]:
    """Return (wall time of each of `repeats` calls, result); their minimum is least disturbed by other load."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def fmt_times(times: list[float]) -> str:
    return " ".join(f"{t:.4f}" for t in times)


def compare(n: int, d: int, k: int, seed: int) -> float:
    from k_means_constrained import KMeansConstrained

    x = synthetic(n, d, seed)
    warm = x[: n // 20]  # first calls pay imports and thread-pool start-up: warm both up first
    spherical_kmeans(warm, k, seed=seed, progress=False)
    KMeansConstrained(n_clusters=k, size_min=len(warm) // k, size_max=len(warm) // k + 1, n_init=1).fit(warm)
    init = kmeans_plusplus(x, k, np.random.default_rng(seed))
    ours_t, ours = timed(REPEATS, lambda: spherical_kmeans(x, k, init=init, progress=False))
    size = n // k
    theirs_t, theirs = timed(
        REPEATS,
        lambda: KMeansConstrained(
            n_clusters=k,
            size_min=size,
            size_max=size + (n % k > 0),
            init=init,
            n_init=1,
            max_iter=1000,
            tol=1e-8,
            random_state=seed,
        ).fit(x),
    )
    ours_s, theirs_s = min(ours_t), min(theirs_t)
    ratio = theirs_s / ours_s
    i_ours, i_theirs = inertia(x, ours.labels, k), inertia(x, theirs.labels_, k)
    print(f"points={n}x{d} k={k} same k-means++ start, n_init=1, fastest of {REPEATS} runs each")
    print(
        f"ours:                seconds={ours_s:.4f} (runs {fmt_times(ours_t)}) iterations={ours.n_iter} "
        f"sizes={np.bincount(ours.labels).tolist()} "
        f"inertia={i_ours:.2f}"
    )
    print(
        f"k-means-constrained: seconds={theirs_s:.4f} (runs {fmt_times(theirs_t)}) iterations={theirs.n_iter_} "
        f"sizes={np.bincount(theirs.labels_).tolist()} inertia={i_theirs:.2f}"
    )
    print(
        f"speed_ratio={ratio:.1f} (goal >= {SPEED_GOAL:.0f})  inertia_ratio={i_ours / i_theirs:.4f} "
        f"(goal <= {INERTIA_GOAL})"
    )
    return ratio


def faiss_seconds(x: np.ndarray, init: np.ndarray, iterations: int, seed: int) -> tuple[float, np.ndarray]:
    """Seconds of faiss's plain spherical k-means on all of `x` from `init` for `iterations`; its labels."""
    import faiss

    n, d = x.shape
    km = faiss.Kmeans(
        d, len(init), niter=iterations, nredo=1, spherical=True, max_points_per_centroid=n, seed=seed, verbose=False
    )
    t0 = time.perf_counter()
    km.train(x, init_centroids=init)
    seconds = time.perf_counter() - t0
    return seconds, km.index.search(x, 1)[1][:, 0]


def big_child(n: int, d: int, k: int, seed: int) -> None:
    x = synthetic(n, d, seed, modes=64, noise=3.0)  # 64 overlapping modes: harder than part 1
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    init = kmeans_plusplus(x, k, np.random.default_rng(seed))
    t0 = time.perf_counter()
    result = spherical_kmeans(x, k, init=init, progress=False)
    seconds = time.perf_counter() - t0
    sizes = np.bincount(result.labels, minlength=k)
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"seconds={seconds:.1f} iterations={result.n_iter} seconds_per_iteration={seconds / result.n_iter:.2f} "
        f"converged={result.converged} sizes_max_minus_min={int(sizes.max() - sizes.min())} "
        f"rss_after_data_mib={rss_data:.0f} peak_rss_ours_mib={rss_ours:.0f}"
    )
    f_seconds, f_labels = faiss_seconds(x, init, result.n_iter, seed)
    f_sizes = np.bincount(f_labels, minlength=k)
    print(
        f"faiss_seconds={f_seconds:.1f} faiss_iterations={result.n_iter} "
        f"faiss_sizes_max_minus_min={int(f_sizes.max() - f_sizes.min())}"
    )
    print(f"big_ratio={seconds / f_seconds:.2f} goal={FAISS_GOAL}")


def big(n: int, d: int, k: int, seed: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "scripts.bench_cluster",
        "--big-child",
        "--big-rows",
        str(n),
        "--big-dim",
        str(d),
        "--seed",
        str(seed),
    ]
    lines = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    data = n * d * 4 / 2**20
    print(f"points={n}x{d} k={k}: {lines[0]} (data alone {data:.0f} MiB; goal < {BIG_SECONDS_GOAL:.0f} s)")
    print(f"faiss plain k-means, same points, start and iterations, all points: {lines[1]}")
    print("# big_ratio = our balanced seconds / faiss's unbalanced seconds (<= 1.5 meets the goal)")
    print(lines[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--big-dim", type=int, default=768)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-big", action="store_true", help="only the side-by-side comparison")
    parser.add_argument("--big-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_child(args.big_rows, args.big_dim, 4, args.seed)
        return 0
    ratio = compare(args.rows, args.dim, 4, args.seed)
    if not args.skip_big:
        big(args.big_rows, args.big_dim, 4, args.seed)
    print(f"# ratio = k-means-constrained seconds / ours, same points, same start (>= {SPEED_GOAL:.0f} meets the goal)")
    print(f"ratio={ratio:.1f} goal={SPEED_GOAL:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
