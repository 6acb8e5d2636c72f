"""Exact balanced assignment of n points to k clusters: the E-step of balanced k-means.

Problem: given costs C (n, k), choose one cluster per point minimising the total cost so that every
cluster holds floor(n/k) or ceil(n/k) points. It is a transportation problem with k sinks.

Why this algorithm. Min-cost flow over the full (n + k)-node graph (what `k-means-constrained` does
with OR-tools) is exact but touches n*k arcs with general-purpose machinery at every iteration. Here
k is small (1-8), so we run successive shortest paths (SSP) on the k-node *cluster graph* instead:

* Dual prices w (one per cluster) keep every point on a cluster minimising C[i, j] - w[j]. Any
  assignment with that property is optimal for its own cluster sizes (complementary slackness).
* Moving a point from cluster a to b costs C[i, b] - C[i, a]; the cheapest such point is kept for
  each ordered pair (a, b). An arc a -> b of the cluster graph has reduced length
  min_i(C[i, b] - C[i, a]) + w[a] - w[b] >= 0, so Dijkstra on k nodes finds the cheapest way to move
  one unit of excess from an over-full cluster to an under-full one (possibly through other clusters).
* After each augmentation w += min(D, D_t) (Johnson potentials) keeps every reduced length >= 0, so the
  property above survives. When no excess is left the sizes are feasible and the assignment is
  optimal (the LP is totally unimodular, so this is the exact integer optimum; tests compare it with
  scipy's Hungarian solver). Which clusters get the ceil(n/k) slots is part of the optimisation: an
  extra node E with capacity n mod k and a unit arc from every cluster models "at most one extra".
* Speed: the number of augmentations equals the excess of the starting assignment. Rounds of exact
  dual coordinate ascent (one selection per cluster) or the prices of the previous k-means iteration
  leave only a small excess. The loops are compiled with numba: an E-step on 10,000 x 4 costs takes
  well under a millisecond, so the similarity product, not the assignment, dominates an iteration.
  Memory is O(n*k): no (n, k, d) tensor, no (n*k)-arc graph object.
* Costs known within +-e (`balanced_assignment_within`, used by k-means with the similarities of an
  earlier iteration, to skip the similarity product of late iterations): a point's margin (how much
  cheaper its best cluster is than its second best, in C - w) can be off by 2e. Only the points whose
  margin bound is below a threshold tau get their true costs and are solved (every other point stays
  put and only counts towards its cluster's size). If the prices then moved by a spread
  max(dw) - min(dw) <= tau, each point that stayed still sits on a cheapest cluster, so the whole
  assignment meets the optimality conditions above: it is exact, not an approximation. Otherwise tau
  grows; past n / 16 points the caller computes every cost afresh.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit
from numba.typed import List

# Coordinate ascent stops once the excess is this small (or n/500), or stops halving; SSP finishes
# exactly from there. None of these constants affects optimality, only speed (and, among tied
# optima, which one is returned).
_WARM_EXCESS = 32
_WARM_ROUNDS = 25
# The near-boundary solve starts with this many points per unit of excess (plus a minimum), once
# coordinate ascent on every point has brought the excess below n / _NEAR_SHARE.
_NEAR_POINTS_PER_EXCESS = 8
_NEAR_POINTS_MIN = 64
_NEAR_SHARE = 50
_PRESAMPLE = 1024  # coordinate ascent first runs on about this many evenly spaced points
_NEAR_SPREAD_SAFETY = 1.2  # after a failed try, take enough points for tau to clear 1.2 x its price spread
_SAMPLE_STRIDE = 16  # a cheap first look at the margins
_FIRST_CANDIDATES = 64  # SSP lists this many cheapest movers per cluster pair at first (doubling on refills)
# SSP's candidate lists: (keep, count, head, bound) as (k, k) arrays; (cand_key, cand_pt) as typed lists of
# k*k arrays, entry a*k + b listing cluster a's cheapest movers to b, sorted by key; two length-n scratch
# arrays. Every point of cluster a missing from list (a, b) has a key >= bound[a, b] (-inf: not listed
# yet), so the list's first entry still in a is the cheapest.
_PairLists = tuple
_WITHIN_SHARE = 16


def cluster_sizes(n: int, k: int) -> tuple[int, int]:
    """Return (floor(n/k), n mod k): every cluster gets the floor, n mod k of them one more."""
    return n // k, n % k


@njit(cache=True, nogil=True)
def _targets(floor: int, extra: int, k: int) -> np.ndarray:
    """Sizes to aim for before SSP decides which clusters get the extra slots: the first `extra` clusters."""
    return floor + (np.arange(k) < extra)


@njit(cache=True, nogil=True)
def _nearest(cost: np.ndarray, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of cost (n, k): the argmin of C - prices (first on ties) and the gap to the second smallest.

    Written with selects, not branches: on points near a boundary branches mispredict (8x slower).
    """
    n, k = cost.shape
    labels = np.empty(n, dtype=np.int64)
    margin = np.empty(n)
    for i in range(n):
        best, second, b = cost[i, 0] - prices[0], np.inf, 0
        for j in range(1, k):
            r = cost[i, j] - prices[j]
            b = j if r < best else b
            high = r if r > best else best
            second = high if high < second else second
            best = r if r < best else best
        labels[i] = b
        margin[i] = second - best
    return labels, margin


@njit(cache=True, nogil=True)
def _excess(labels: np.ndarray, targets: np.ndarray) -> int:
    """How many points sit in clusters beyond their targets, plus how many are missing from the others."""
    return int(np.abs(np.bincount(labels, minlength=len(targets)) - targets).sum())


@njit(cache=True, nogil=True)
def _gaps(cost: np.ndarray, prices: np.ndarray, j: int, gap: np.ndarray) -> None:
    """gap[i] = C[i, j] - min over m != j of (C[i, m] - prices[m]): point i prefers j iff gap[i] < prices[j]."""
    reduced = prices.copy()
    reduced[j] = -np.inf  # C[i, j] + inf never wins the minimum
    for i in range(cost.shape[0]):
        other = np.inf
        for m in range(cost.shape[1]):
            r = cost[i, m] - reduced[m]
            other = r if r < other else other
        gap[i] = cost[i, j] - other


@njit(cache=True, nogil=True)
def _order_pair(values: np.ndarray, t: int) -> tuple[float, float]:
    """The t-th and (t+1)-th smallest of `values` (1 <= t < len): a histogram pass, then a sort of one bin or two.

    Quickselect is branch-bound on these unpredictable inputs; counting into bins is not.
    """
    lo, hi = values.min(), values.max()
    if not lo < hi:
        return lo, lo
    bins = min(len(values), 1024)
    scale = bins / (hi - lo)
    counts = np.zeros(bins, dtype=np.int64)
    for v in values:
        counts[min(int((v - lo) * scale), bins - 1)] += 1
    first, seen = 0, 0  # the bins holding ranks t-1 and t (0-based)
    while seen + counts[first] <= t - 1:
        seen += counts[first]
        first += 1
    last, through = first, seen + counts[first]
    while through <= t:
        last += 1
        through += counts[last]
    picked = np.empty(through - seen)
    m = 0
    for v in values:
        b = min(int((v - lo) * scale), bins - 1)
        if first <= b <= last:
            picked[m] = v
            m += 1
    picked.sort()
    return picked[t - 1 - seen], picked[t - seen]


@njit(cache=True, nogil=True)
def _warm_prices(
    cost: np.ndarray, prices: np.ndarray, targets: np.ndarray, enough: int, max_rounds: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact dual coordinate ascent until the sizes miss `targets` by `enough` or stop halving.

    Each step sets one price so that exactly targets[j] points prefer cluster j (given the others).
    Returns (prices, labels = argmin of C - prices, margins).
    """
    n, k = cost.shape
    prices = prices.copy()
    gap = np.empty(n)
    last, rounds = np.inf, 0
    while True:
        labels, margin = _nearest(cost, prices)
        excess = _excess(labels, targets)
        if rounds == max_rounds or excess <= enough or excess > last / 2:
            return prices, labels, margin
        last, rounds = excess, rounds + 1
        for j in range(k):
            _gaps(cost, prices, j, gap)
            t = targets[j]
            if t == 0:
                prices[j] = gap.min() - 1.0
            elif t >= n:
                prices[j] = gap.max() + 1.0
            else:
                below, above = _order_pair(gap, t)
                prices[j] = 0.5 * (below + above)


@njit(cache=True, nogil=True)
def _refill(cost: np.ndarray, labels: np.ndarray, a: int, lists: _PairLists) -> None:
    """List the cheapest points of cluster a to move to each b (at least keep[a, b] of them), sorted by key."""
    keep, count, head, bound, cand_key, cand_pt, members, keys = lists
    k = cost.shape[1]
    m = 0
    for i in range(len(labels)):
        if labels[i] == a:
            members[m] = i
            m += 1
    for b in range(k):
        if b == a:
            continue
        for r in range(m):
            keys[r] = cost[members[r], b] - cost[members[r], a]
        if m > keep[a, b]:  # every point left out has a key >= bound
            bound[a, b] = _order_pair(keys[:m], keep[a, b])[0]
            chosen = np.flatnonzero(keys[:m] <= bound[a, b])
        else:
            bound[a, b] = np.inf
            chosen = np.arange(m)
        order = chosen[np.argsort(keys[chosen], kind="mergesort")]
        q = a * k + b
        cand_key[q] = np.empty(2 * len(order) + 16)
        cand_pt[q] = np.empty(2 * len(order) + 16, dtype=np.int64)
        cand_key[q][: len(order)] = keys[order]
        cand_pt[q][: len(order)] = members[order]
        count[a, b], head[a, b] = len(order), 0


@njit(cache=True, nogil=True)
def _cheapest(cost: np.ndarray, labels: np.ndarray, a: int, b: int, lists: _PairLists) -> tuple[float, int]:
    """The cheapest (key C[i, b] - C[i, a], point) still in cluster a; (inf, -1) when a is empty."""
    keep, count, head, bound, cand_key, cand_pt, members, keys = lists
    q = a * cost.shape[1] + b
    while True:
        h = head[a, b]
        while h < count[a, b] and labels[cand_pt[q][h]] != a:  # moved away since it was listed
            h += 1
        head[a, b] = h
        if h < count[a, b]:
            return cand_key[q][h], cand_pt[q][h]
        if bound[a, b] == np.inf:
            return np.inf, -1
        if bound[a, b] > -np.inf:  # ran dry: list twice as many next time
            keep[a, b] *= 2
        _refill(cost, labels, a, lists)


@njit(cache=True, nogil=True)
def _arrived(cost: np.ndarray, point: int, v: int, lists: _PairLists) -> None:
    """Point moved into cluster v: list it for each pair (v, x) where it beats the bound of the points left out."""
    keep, count, head, bound, cand_key, cand_pt, members, keys = lists
    k = cost.shape[1]
    for x in range(k):
        key = cost[point, x] - cost[point, v]
        if x == v or not key < bound[v, x]:  # bound -inf: not listed yet, the first refill finds it
            continue
        q = v * k + x
        h, c = head[v, x], count[v, x]
        if c == len(cand_key[q]):  # full: drop the consumed head, grow if still needed
            grown_key, grown_pt = np.empty(2 * (c - h) + 16), np.empty(2 * (c - h) + 16, dtype=np.int64)
            grown_key[: c - h], grown_pt[: c - h] = cand_key[q][h:c], cand_pt[q][h:c]
            cand_key[q], cand_pt[q] = grown_key, grown_pt
            h, c = 0, c - h
        pos = h + np.searchsorted(cand_key[q][h:c], key, side="right")
        cand_key[q][pos + 1 : c + 1] = cand_key[q][pos:c].copy()
        cand_pt[q][pos + 1 : c + 1] = cand_pt[q][pos:c].copy()
        cand_key[q][pos], cand_pt[q][pos] = key, point
        head[v, x], count[v, x] = h, c + 1


@njit(cache=True, nogil=True)
def _pair_lists(n: int, k: int) -> _PairLists:
    cand_key, cand_pt = List(), List()
    for _ in range(k * k):
        cand_key.append(np.empty(0))
        cand_pt.append(np.empty(0, dtype=np.int64))
    zeros = np.zeros((k, k), dtype=np.int64)
    return (
        np.full((k, k), _FIRST_CANDIDATES, dtype=np.int64),
        zeros,
        zeros.copy(),
        np.full((k, k), -np.inf),
        cand_key,
        cand_pt,
        np.empty(n, dtype=np.int64),
        np.empty(n),
    )


@njit(cache=True, nogil=True)
def _augment(cost: np.ndarray, labels: np.ndarray, prices: np.ndarray, excess_k: np.ndarray, extra: int) -> np.ndarray:
    """Successive shortest paths on the cluster graph until no excess is left; updates `labels`, returns prices."""
    n, k = cost.shape
    node_e = k  # the "one extra point" node, used when n mod k > 0
    nodes = k + 1 if extra else k
    pot = np.empty(nodes)
    pot[:k] = prices
    excess = np.empty(nodes, dtype=np.int64)
    excess[:k] = excess_k
    if extra:
        pot[node_e] = prices.min()
        excess[node_e] = -extra
    used = np.zeros(k, dtype=np.bool_)
    lists = _pair_lists(n, k)
    dist = np.empty(nodes)
    pred = np.empty(nodes, dtype=np.int64)
    pred_pt = np.empty(nodes, dtype=np.int64)
    done = np.empty(nodes, dtype=np.bool_)
    while (excess > 0).any():
        # Dijkstra from every over-full node at once on the (k [+1])-node residual graph.
        dist[:] = np.inf
        pred[:] = -1
        pred_pt[:] = -1
        done[:] = False
        for s in range(nodes):
            if excess[s] > 0:
                dist[s] = 0.0
        while True:
            u, du = -1, np.inf
            for v in range(nodes):
                if not done[v] and dist[v] < du:
                    u, du = v, dist[v]
            if u < 0:
                raise RuntimeError("balanced assignment: no under-full cluster is reachable")
            done[u] = True
            if excess[u] < 0:
                break  # nearest under-full node: the labels of the rest are not needed
            if u == node_e:
                for j in range(k):
                    nd = du + max(pot[u] - pot[j], 0.0)
                    if used[j] and not done[j] and nd < dist[j]:
                        dist[j], pred[j], pred_pt[j] = nd, u, -1
            else:
                for b in range(k):
                    if b == u or done[b]:
                        continue
                    key, point = _cheapest(cost, labels, u, b, lists)
                    nd = du + max(key + pot[u] - pot[b], 0.0)
                    if point >= 0 and nd < dist[b]:
                        dist[b], pred[b], pred_pt[b] = nd, u, point
                if extra and not used[u]:
                    nd = du + max(pot[u] - pot[node_e], 0.0)
                    if not done[node_e] and nd < dist[node_e]:
                        dist[node_e], pred[node_e], pred_pt[node_e] = nd, u, -1
        t, dt = u, dist[u]
        for v in range(nodes):
            pot[v] += min(dist[v], dt)
        v = t
        while pred[v] >= 0:  # walk back to the source, moving one unit along each arc
            u = pred[v]
            if v == node_e:
                used[u] = True
            elif u == node_e:
                used[v] = False
            else:
                labels[pred_pt[v]] = v
                _arrived(cost, pred_pt[v], v, lists)
            v = u
        excess[v] -= 1
        excess[t] += 1
    return pot[:k].copy()


@njit(cache=True, nogil=True)
def _solve(
    cost: np.ndarray, prices: np.ndarray, fixed: np.ndarray, floor: int, extra: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact assignment of the rows of `cost` when `fixed[j]` points outside it already sit in cluster j."""
    n, k = cost.shape
    targets = np.maximum(_targets(floor, extra, k) - fixed, 0)
    enough = max(_WARM_EXCESS, n // 500)
    prices, labels, _ = _warm_prices(cost, prices, targets, enough, _WARM_ROUNDS)
    return labels, _augment(cost, labels, prices, np.bincount(labels, minlength=k) + fixed - floor, extra)


def _as_cost(cost: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cost, dtype=np.float64)


def balanced_assignment(cost: np.ndarray, prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Assign each row of `cost` (n, k) to a column, minimising the total, with balanced column counts.

    Args:
        cost: costs (float32 or float64); row i, column j = cost of putting point i in cluster j.
        prices: optional dual prices from a previous call (warm start; same k).

    Returns:
        (labels (n,) int64, prices (k,) float64 to warm-start the next call).
    """
    n, k = cost.shape
    w = np.zeros(k) if prices is None else np.array(prices, dtype=np.float64)
    if k == 1:
        return np.zeros(n, dtype=np.int64), w
    cost = _as_cost(cost)
    floor, extra = cluster_sizes(n, k)
    no_fixed = np.zeros(k, dtype=np.int64)
    targets = _targets(floor, extra, k)
    enough = n // _NEAR_SHARE
    w, labels, margin = _warm_prices(cost, w, targets, enough, 0)
    if _excess(labels, targets) > enough:
        if n >= 2 * _PRESAMPLE:  # far off: first balance an evenly spaced sample (cheap rounds)
            sample = np.ascontiguousarray(cost[:: n // _PRESAMPLE])
            sample_targets = _targets(*cluster_sizes(len(sample), k), k)
            w = _warm_prices(sample, w, sample_targets, len(sample) // _NEAR_SHARE, _WARM_ROUNDS)[0]
        w, labels, margin = _warm_prices(cost, w, targets, enough, _WARM_ROUNDS)
    if _is_optimal(np.bincount(labels, minlength=k), w, floor, extra):
        return labels, w
    solved = _solve_near_boundary(labels, margin, w, lambda idx: cost[idx], n // 2, floor, extra)
    return solved if solved is not None else _solve(cost, w, no_fixed, floor, extra)


def _is_optimal(sizes: np.ndarray, prices: np.ndarray, floor: int, extra: int) -> bool:
    """Complementary slackness for points already on argmin(C - prices): balanced, extras on the cheapest."""
    big = sizes > floor
    if sizes.min() < floor or sizes.max() > floor + 1 or int(big.sum()) != extra:
        return False
    return extra == 0 or prices[big].max() <= prices[~big].min()


def _near_boundary(lower: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    """The points whose margin bound is below tau ~ the m-th smallest bound (from a strided sample), and tau."""
    stride = max(1, m // 16)
    sample = lower[::stride]
    q = min(len(sample) - 1, m // stride)
    tau = float(np.partition(sample, q)[q])
    return np.flatnonzero(lower < tau), tau


def _solve_near_boundary(
    labels: np.ndarray,
    lower: np.ndarray,
    prices: np.ndarray,
    exact: Callable[[np.ndarray], np.ndarray],
    limit: int,
    floor: int,
    extra: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Re-solve only the points closest to a cluster boundary; None when that takes `limit` points or more.

    `lower` bounds every point's true margin from below; `exact(idx)` gives the true (m, k) costs.
    """
    k = len(prices)
    sizes = np.bincount(labels, minlength=k)
    unsure = int(np.count_nonzero(lower < 0))  # these points cannot be held in place
    m = _NEAR_POINTS_PER_EXCESS * int(np.abs(sizes - floor).sum()) + _NEAR_POINTS_MIN + unsure
    while m < limit:
        near, tau = _near_boundary(lower, m)  # every other point's true margin is >= tau
        if len(near) >= limit:
            break
        fixed = sizes - np.bincount(labels[near], minlength=k)
        spread = 0.0
        if tau >= 0 and fixed.max() <= floor:
            near_labels, new_prices = _solve(_as_cost(exact(near)), prices, fixed, floor, extra)
            shift = new_prices - prices
            spread = shift.max() - shift.min()
            if spread <= tau:
                labels = labels.copy()
                labels[near] = near_labels
                return labels, new_prices
        # Next try: at least twice the points, and enough for tau to clear the spread just seen.
        m = max(2 * m, int(np.count_nonzero(lower < _NEAR_SPREAD_SAFETY * spread)))
    return None


def balanced_assignment_within(
    cost: np.ndarray, prices: np.ndarray, errors: np.ndarray, exact_cost: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact balanced assignment when column j of `cost` (n, k) is only known to within `errors[j]`.

    Only the points near a boundary get their true costs, `exact_cost(indices)` (m, k); the others
    provably keep their cluster. Returns None when n / _WITHIN_SHARE points or more would need true
    costs (fetching scattered rows then costs about as much as computing every cost afresh).
    """
    n, k = cost.shape
    prices = np.asarray(prices, dtype=np.float64)
    if k == 1:
        return np.zeros(n, dtype=np.int64), prices
    # A point in cluster a: its margin to any b can be off by errors[a] + errors[b].
    top = np.argmax(errors)
    slack = errors + np.where(np.arange(k) == top, np.partition(errors, k - 2)[k - 2], errors[top])
    labels, margin = _nearest(_as_cost(cost[::_SAMPLE_STRIDE]), prices)
    if np.count_nonzero(margin < slack[labels]) * _WITHIN_SHARE >= len(labels):
        return None  # a cheap first look: too many margins are within the error
    labels, margin = _nearest(_as_cost(cost), prices)
    return _solve_near_boundary(
        labels, margin - slack[labels], prices, exact_cost, n // _WITHIN_SHARE, *cluster_sizes(n, k)
    )
