"""Exact balanced assignment: optimality against scipy's Hungarian solver, balance, warm starts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from clustering.transport import _order_pair, balanced_assignment, balanced_assignment_within, cluster_sizes


def exact_optimum(cost: np.ndarray) -> float:
    """Optimum by brute force over which clusters get the extra slot, each solved by the Hungarian method."""
    n, k = cost.shape
    floor, extra = cluster_sizes(n, k)
    best = np.inf
    for bigger in itertools.combinations(range(k), extra):
        columns = [j for j in range(k) for _ in range(floor + (j in bigger))]
        expanded = cost[:, columns]
        rows, cols = linear_sum_assignment(expanded)
        best = min(best, float(expanded[rows, cols].sum()))
    return best


def check(cost: np.ndarray, labels: np.ndarray) -> None:
    n, k = cost.shape
    sizes = np.bincount(labels, minlength=k)
    assert labels.shape == (n,) and sizes.sum() == n
    assert sizes.max() - sizes.min() <= 1
    assert cost[np.arange(n), labels].sum() == pytest.approx(exact_optimum(cost), abs=1e-9)


@pytest.mark.parametrize("case", range(120))
def test_matches_hungarian_optimum(case):
    rng = np.random.default_rng(case)
    n, k = int(rng.integers(1, 40)), int(rng.integers(1, 6))
    cost = rng.random((n, k))
    if case % 3 == 0:
        cost = np.round(cost * 3)  # many ties
    if case % 4 == 0:
        cost[:, 0] -= 2.0  # every point wants cluster 0: large excess to move
    labels, _ = balanced_assignment(cost)
    check(cost, labels)


def test_points_move_through_intermediate_clusters():
    # Cluster 0 is over-full; the cheap way to relieve it goes 0 -> 1 -> 2, not 0 -> 2 directly.
    cost = np.array(
        [[0.0, 0.1, 9.0], [0.0, 0.2, 9.0], [5.0, 0.0, 0.05], [5.0, 0.0, 0.3], [9.0, 9.0, 0.0], [0.0, 0.3, 9.0]]
    )
    labels, _ = balanced_assignment(cost)
    check(cost, labels)
    assert labels.tolist() == [1, 0, 2, 1, 2, 0]  # total 0.15: the unique optimum


def test_warm_prices_give_the_same_optimum_for_awkward_sizes():
    rng = np.random.default_rng(7)
    cost = rng.random((1001, 4)) + np.array([0.0, 0.2, 0.4, 0.6])
    labels, prices = balanced_assignment(cost)
    assert sorted(np.bincount(labels).tolist()) == [250, 250, 250, 251]
    again, _ = balanced_assignment(cost, prices)
    assert cost[np.arange(1001), again].sum() == pytest.approx(cost[np.arange(1001), labels].sum(), abs=1e-9)
    shuffled_start, _ = balanced_assignment(cost, rng.normal(size=4) * 5)
    assert (np.bincount(shuffled_start, minlength=4).max() - np.bincount(shuffled_start, minlength=4).min()) <= 1


def test_more_clusters_than_points():
    cost = np.array([[1.0, 0.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    labels, _ = balanced_assignment(cost)
    assert labels.tolist() == [1, 0]


@pytest.mark.parametrize("noise", [0.0, 1e-3, 1e-2, 0.3])
def test_warm_start_gives_the_cold_optimum(noise):
    # Prices from a nearby problem (as from the previous k-means iteration) take the near-boundary path.
    rng = np.random.default_rng(11)
    for n, k in [(1001, 4), (1000, 4), (2999, 7), (600, 2)]:
        cost = rng.random((n, k)) + rng.random(k)
        _, prices = balanced_assignment(cost)
        moved = cost + noise * rng.normal(size=cost.shape)
        warm, _ = balanced_assignment(moved, prices)
        cold, _ = balanced_assignment(moved)
        sizes = np.bincount(warm, minlength=k)
        assert sizes.max() - sizes.min() <= 1
        assert moved[np.arange(n), warm].sum() == pytest.approx(moved[np.arange(n), cold].sum(), abs=1e-9)


@pytest.mark.parametrize("case", range(40))
def test_warm_start_matches_hungarian_on_small_problems(case):
    rng = np.random.default_rng(1000 + case)
    n, k = int(rng.integers(2, 40)), int(rng.integers(2, 5))
    cost = rng.random((n, k))
    if case % 2:
        cost = np.round(cost * 3)  # ties
    labels, _ = balanced_assignment(cost, rng.normal(size=k) * 0.1)
    check(cost, labels)


def test_bounded_costs_give_the_exact_optimum_from_few_true_rows():
    rng = np.random.default_rng(12)
    n, k, error = 4001, 4, 0.001
    true = rng.random((n, k)) + np.array([0.0, 0.1, 0.2, 0.3])
    _, prices = balanced_assignment(true + 0.05 * rng.normal(size=true.shape))  # an earlier, nearby problem
    known = true + rng.uniform(-error, error, size=true.shape)
    asked = []

    def exact_cost(idx: np.ndarray) -> np.ndarray:
        asked.append(len(idx))
        return true[idx]

    labels, _ = balanced_assignment_within(known, prices, np.full(k, error), exact_cost)
    cold, _ = balanced_assignment(true)
    assert true[np.arange(n), labels].sum() == pytest.approx(true[np.arange(n), cold].sum(), abs=1e-9)
    assert sorted(np.bincount(labels).tolist()) == [1000, 1000, 1000, 1001]
    assert 0 < sum(asked) < n


def test_bounded_costs_give_up_when_the_error_hides_every_boundary():
    rng = np.random.default_rng(13)
    cost = rng.random((1000, 4))
    _, prices = balanced_assignment(cost)
    assert balanced_assignment_within(cost, prices, np.ones(4), lambda idx: cost[idx]) is None


def test_large_tied_problems_are_solved_exactly():
    # Few distinct costs: coordinate ascent stalls on the ties and SSP moves many points; the returned
    # prices certify optimality (every point on a cheapest cluster of C - prices, sizes equal).
    rng = np.random.default_rng(21)
    n, k = 60_000, 6
    cost = np.round(rng.random((n, k)) * 3)
    labels, prices = balanced_assignment(cost)
    assert np.bincount(labels, minlength=k).tolist() == [n // k] * k
    reduced = cost - prices
    assert (reduced[np.arange(n), labels] <= reduced.min(axis=1) + 1e-9).all()


@pytest.mark.parametrize("case", range(200))
def test_order_pair_gives_the_two_middle_order_statistics(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(2, 3000))
    values = rng.standard_normal(n) ** int(rng.integers(1, 4))
    if case % 3 == 0:
        values = np.round(values * 2)  # ties
    if case % 7 == 0:
        values[: n // 2] = 1e6  # one far cluster of values: most bins empty
    t = int(rng.integers(1, n))
    ordered = np.sort(values)
    assert _order_pair(values, t) == (ordered[t - 1], ordered[t])
