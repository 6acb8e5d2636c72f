"""Confidence intervals and paired significance tests on per-example scores.

`bootstrap_ci`: percentile bootstrap 95% interval of one system's mean (`corpus_bootstrap_ci`: of a corpus
metric, from per-example sufficient statistics). Paired tests of two systems:
bootstrap resampling (Koehn 2004), approximate randomization (Noreen 1989; Riezler & Maxwell 2005) and
the t-test. `compare_many` tests several systems against one baseline and adds Holm-corrected p-values
(the family: the systems compared, per metric and test). Every random draw is seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from run_config.errors import DataError

BATCH = 100  # bootstrap resamples drawn at once (bounds memory at BATCH x n indices)


def resampled_means(x: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of `samples` bootstrap resamples of `x` (examples drawn with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [x[rng.integers(0, len(x), size=(min(BATCH, samples - s), len(x)))].mean(1) for s in range(0, samples, BATCH)]
    )


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 1000, seed: int = 42) -> dict[str, float]:
    """Paired bootstrap (Koehn 2004) of mean(a) - mean(b): two-sided p-value ((flips+1)/(B+1)) and 95% interval."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = resampled_means(diff, samples, seed)
    flips = min(int((means <= 0).sum()), int((means >= 0).sum()))
    p = min(1.0, 2.0 * (flips + 1) / (samples + 1))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"delta": float(diff.mean()), "p_value": p, "ci95": [float(low), float(high)], "samples": samples}


def bootstrap_ci(values: np.ndarray, samples: int = 1000, seed: int = 42) -> list[float]:
    """Percentile bootstrap 95% interval [low, high] of mean(values), resampling examples with replacement."""
    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return [0.0, 0.0]
    low, high = np.percentile(resampled_means(x, samples, seed), [2.5, 97.5])
    return [float(low), float(high)]


def corpus_bootstrap_ci(
    stats: Sequence[np.ndarray], finish: Callable[[np.ndarray], float], samples: int = 1000, seed: int = 42
) -> list[float]:
    """Percentile bootstrap 95% interval of a corpus metric averaged over runs: each resample draws examples
    (the same draw in every run of equal size) and `finish` turns each run's summed statistics into a score."""
    totals = np.zeros(samples)
    for run in stats:
        rng = np.random.default_rng(seed)
        for s in range(0, samples, BATCH):
            b, n = min(BATCH, samples - s), len(run)
            idx = rng.integers(0, n, size=(b, n))
            counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
            totals[s : s + b] += [finish(row) for row in counts @ run]
    low, high = np.percentile(totals / len(stats), [2.5, 97.5])
    return [float(low), float(high)]


def approximate_randomization(a: np.ndarray, b: np.ndarray, samples: int = 1000, seed: int = 42) -> dict[str, float]:
    """Paired approximate randomization of |mean(a) - mean(b)|: each pair's two scores swapped with probability
    1/2 per trial; two-sided p-value (r+1)/(R+1), r = trials at least as extreme as the observed difference."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    tol = 1e-12 * max(1.0, observed)
    extreme = 0
    for s in range(0, samples, BATCH):
        signs = rng.integers(0, 2, size=(min(BATCH, samples - s), len(diff))) * 2 - 1
        extreme += int((np.abs((signs * diff).mean(1)) >= observed - tol).sum())
    return {"delta": float(diff.mean()), "p_value": (extreme + 1) / (samples + 1), "samples": samples}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def paired_ttest(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired t-test of a vs b; identical inputs give p = 1."""
    from scipy.stats import ttest_rel

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not diff.any():
        return {"t": 0.0, "p_value": 1.0}
    result = ttest_rel(a, b)
    return {"t": float(result.statistic), "p_value": float(result.pvalue)}


def compare(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    samples: int = 1000,
    seed: int = 42,
    source: str = "predictions",
) -> dict:
    """Test every metric on the ids both systems scored; `a`/`b` map metric -> id -> score."""
    out: dict = {}
    for metric in a.keys() & b.keys():
        ids = sorted(a[metric].keys() & b[metric].keys())
        if not ids:
            raise DataError(source, None, "id", "the two prediction files share no id")
        x = np.asarray([a[metric][i] for i in ids])
        y = np.asarray([b[metric][i] for i in ids])
        out[metric] = {
            "n": len(ids),
            "only_a": len(a[metric]) - len(ids),
            "only_b": len(b[metric]) - len(ids),
            "mean_a": float(x.mean()),
            "mean_b": float(y.mean()),
            "bootstrap": paired_bootstrap(x, y, samples, seed),
            "randomization": approximate_randomization(x, y, samples, seed),
            "ttest": paired_ttest(x, y),
        }
    return out


TESTS = ("bootstrap", "randomization", "ttest")


def compare_many(
    systems: Mapping[str, Mapping[str, Mapping[str, float]]],
    baseline: Mapping[str, Mapping[str, float]],
    samples: int = 1000,
    seed: int = 42,
    source: str = "predictions",
) -> dict[str, dict]:
    """`compare` of every system (name -> metric -> id -> score) against `baseline`; each test's result gains
    `p_holm`, its p-value Holm-corrected over the systems (per metric and test; one system: unchanged)."""
    out = {name: compare(scores, baseline, samples, seed, source) for name, scores in systems.items()}
    metrics = sorted({m for per in out.values() for m in per})
    for metric in metrics:
        names = [n for n in out if metric in out[n]]
        for test in TESTS:
            adjusted = holm([out[n][metric][test]["p_value"] for n in names])
            for n, p in zip(names, adjusted):
                out[n][metric][test]["p_holm"] = p
    return out
