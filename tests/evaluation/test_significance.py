"""Bootstrap CIs, approximate randomization and Holm's correction, checked against exact references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import permutation_test

from evaluation.significance import approximate_randomization, bootstrap_ci, compare_many, holm


def test_bootstrap_ci_is_seeded_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(3)
    small, large = rng.normal(40, 10, 100), rng.normal(40, 10, 10_000)
    low, high = bootstrap_ci(small, 500, seed=1)
    assert low < small.mean() < high
    assert bootstrap_ci(small, 500, seed=1) == [low, high] and bootstrap_ci(small, 500, seed=2) != [low, high]
    # the percentile interval is close to mean ± 1.96 standard errors for a mean of normal values
    se = small.std(ddof=1) / np.sqrt(len(small))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    big_low, big_high = bootstrap_ci(large, 500, seed=1)
    assert big_high - big_low < (high - low) / 5


def test_approximate_randomization_matches_the_exact_permutation_test():
    """On 12 pairs all 2^12 sign flips can be enumerated (scipy's exact paired permutation test): the
    approximate test with many trials lands on the exact p-value."""
    rng = np.random.default_rng(0)
    a = rng.normal(50, 8, 12)
    b = a - 2.5 + rng.normal(0, 4, 12)

    def mean_diff(x, y):
        return np.mean(x - y, axis=-1)

    exact = permutation_test((a, b), mean_diff, permutation_type="samples", n_resamples=np.inf).pvalue
    approx = approximate_randomization(a, b, samples=20_000, seed=5)
    assert approx["delta"] == pytest.approx(float(np.mean(a - b)))
    assert approx["p_value"] == pytest.approx(exact, abs=0.01)
    assert approximate_randomization(a, a, samples=200)["p_value"] == 1.0
    assert approximate_randomization(a, b, 300, seed=9) == approximate_randomization(a, b, 300, seed=9)


def test_holm_step_down_adjustment():
    # Holm (1979): sorted p x (m - rank), made monotone, capped at 1, reported in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == [0.2]
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_compare_many_corrects_over_the_systems():
    rng = np.random.default_rng(1)
    ids = [f"id{i}" for i in range(300)]
    base = rng.normal(30, 10, 300)
    systems = {
        "better": {"bleu": dict(zip(ids, base + 4 + rng.normal(0, 2, 300)))},
        "same": {"bleu": dict(zip(ids, base + rng.normal(0, 2, 300)))},
    }
    out = compare_many(systems, {"bleu": dict(zip(ids, base))}, samples=500, seed=3)
    for test in ("bootstrap", "randomization", "ttest"):
        raw = [out[n]["bleu"][test]["p_value"] for n in systems]
        assert [out[n]["bleu"][test]["p_holm"] for n in systems] == pytest.approx(holm(raw))
    assert out["better"]["bleu"]["randomization"]["p_holm"] < 0.01
    assert out["same"]["bleu"]["ttest"]["p_holm"] >= out["same"]["bleu"]["ttest"]["p_value"]


def test_corpus_bootstrap_of_sacrebleu_equals_recomputing_each_resample(urban):
    """The CI from summed sufficient statistics is the one sacrebleu gives when rerun on every resample."""
    import sacrebleu

    from evaluation.metrics import get_metric
    from evaluation.significance import corpus_bootstrap_ci

    records = urban[:120]
    hyps = [" ".join(r.definition.split()[:5]) for r in records]
    refs = [[r.definition] for r in records[::-1]][::-1]
    metric = get_metric("sacrebleu")
    stats = metric.corpus_statistics(hyps, refs)
    assert metric.from_statistics(stats.sum(0)) == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]]).score
    )
    low, high = corpus_bootstrap_ci([stats], metric.from_statistics, samples=30, seed=4)
    rng = np.random.default_rng(4)
    idx = rng.integers(0, len(hyps), size=(30, len(hyps)))
    direct = [sacrebleu.corpus_bleu([hyps[i] for i in row], [[refs[i][0] for i in row]]).score for row in idx]
    assert [low, high] == pytest.approx(np.percentile(direct, [2.5, 97.5]).tolist())
