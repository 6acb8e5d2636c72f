"""Paired significance tests between two systems' per-example scores: bootstrap resampling and t-test."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from run_config.errors import DataError

BATCH = 100  # bootstrap resamples drawn at once (bounds memory at BATCH x n indices)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 1000, seed: int = 42) -> dict[str, float]:
    """Paired bootstrap (Koehn 2004) of mean(a) - mean(b): two-sided p-value ((flips+1)/(B+1)) and 95% interval."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diff[rng.integers(0, len(diff), size=(min(BATCH, samples - s), len(diff)))].mean(1)
            for s in range(0, samples, BATCH)
        ]
    )
    flips = min(int((means <= 0).sum()), int((means >= 0).sum()))
    p = min(1.0, 2.0 * (flips + 1) / (samples + 1))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"delta": float(diff.mean()), "p_value": p, "ci95": [float(low), float(high)], "samples": samples}


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
            "ttest": paired_ttest(x, y),
        }
    return out
