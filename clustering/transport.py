"""Exact balanced assignment of n points to k clusters: the E-step of balanced k-means.

Problem: given costs C (n, k), choose one cluster per point minimising the total cost so that every
cluster holds floor(n/k) or ceil(n/k) points. It is a transportation problem with k sinks.

Why this algorithm. Min-cost flow over the full (n + k)-node graph (what `k-means-constrained` does
with OR-tools) is exact but touches n*k arcs with general-purpose machinery at every iteration. Here
k is small (1-8), so we run successive shortest paths (SSP) on the k-node *cluster graph* instead:

* Dual prices w (one per cluster) keep every point on a cluster minimising C[i, j] - w[j]. Any
  assignment with that property is optimal for its own cluster sizes (complementary slackness).
* Moving a point from cluster a to b costs C[i, b] - C[i, a]; the cheapest such point for each ordered
  pair (a, b) is kept in a lazily sorted queue. An arc a -> b of the cluster graph has reduced length
  min_i(C[i, b] - C[i, a]) + w[a] - w[b] >= 0, so Dijkstra on k nodes finds the cheapest way to move
  one unit of excess from an over-full cluster to an under-full one (possibly through other clusters).
* After each augmentation w += min(D, D_t) (Johnson potentials) keeps every reduced length >= 0, so the
  property above survives. When no excess is left the sizes are feasible and the assignment is
  optimal (the LP is totally unimodular, so this is the exact integer optimum; tests compare it with
  scipy's Hungarian solver). Which clusters get the ceil(n/k) slots is part of the optimisation: an
  extra node E with capacity n mod k and a unit arc from every cluster models "at most one extra".
* Speed: the number of augmentations equals the excess of the starting assignment. Prices from a
  few rounds of exact dual coordinate ascent (one `np.partition` per cluster) or from the previous
  k-means iteration leave only a small excess, so the Python loop runs few times and all heavy work
  is vectorised NumPy. Memory is O(n*k): no (n, k, d) tensor, no (n*k)-arc graph object.
* Near-boundary solve, the reason late k-means iterations are cheap: with prices w, a point's margin
  is how much cheaper its best cluster is than its second best (in C - w). Only the points with a
  margin below a threshold tau are solved (coordinate ascent + SSP on them; every other point stays
  put and only counts towards its cluster's size). If the prices then moved by a spread
  max(dw) - min(dw) <= tau, each point that stayed still sits on a cheapest cluster, so the whole
  assignment meets the optimality conditions above: it is exact, not an approximation. Otherwise tau
  grows; past half the points the full problem is solved.
* Costs known within +-e (`balanced_assignment_within`, used by k-means with the similarities of an
  earlier iteration): margins can be off by 2e, so the points below tau + 2e get their true costs and
  the others are certain to keep their cluster; the argument above then holds with the true costs.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

# Stop dual coordinate ascent once the excess is this small (or n/500); SSP finishes exactly from there.
# None of these constants affects optimality, only speed (and, among tied optima, which one is returned).
_WARM_EXCESS = 32
_WARM_ROUNDS = 25
_FIRST_CHUNK = 64
# The near-boundary solve starts with this many points per unit of excess (plus a minimum), once
# coordinate ascent on every point has brought the excess below n / _NEAR_SHARE.
_NEAR_POINTS_PER_EXCESS = 8
_NEAR_POINTS_MIN = 64
_NEAR_SHARE = 50
_NEAR_SPREAD_SAFETY = 1.2  # after a failed try, take enough points for tau to clear 1.2 x its price spread
_SAMPLE_STRIDE = 16  # a cheap first look at the margins
_WITHIN_SHARE = 16


def cluster_sizes(n: int, k: int) -> tuple[int, int]:
    """Return (floor(n/k), n mod k): every cluster gets the floor, n mod k of them one more."""
    return n // k, n % k


class _PairQueue:
    """Points of cluster a in increasing order of the cost of moving them to cluster b (lazy)."""

    __slots__ = ("rest", "chunk", "pos", "heap", "size")

    def __init__(self, points: np.ndarray, keys: np.ndarray) -> None:
        self.rest = (points, keys)  # not yet ordered
        self.chunk: list[tuple[float, int]] = []
        self.pos = 0
        self.heap: list[tuple[float, int]] = []
        self.size = _FIRST_CHUNK

    def _refill(self) -> bool:
        points, keys = self.rest
        if not len(points):
            return False
        m = min(self.size, len(points))
        self.size *= 2
        if m < len(points):
            part = np.argpartition(keys, m - 1)
            head, tail = part[:m], part[m:]
        else:
            head, tail = np.arange(len(points)), np.arange(0)
        order = head[np.argsort(keys[head], kind="stable")]
        self.chunk = list(zip(keys[order].tolist(), points[order].tolist()))
        self.pos = 0
        self.rest = (points[tail], keys[tail])
        return True

    def peek(self, labels: np.ndarray, a: int) -> tuple[float, int] | None:
        """Return the cheapest (key, point) still in cluster a, dropping stale entries."""
        while True:
            while self.pos < len(self.chunk) and labels[self.chunk[self.pos][1]] != a:
                self.pos += 1
            if self.pos < len(self.chunk) or not self._refill():
                break
        while self.heap and labels[self.heap[0][1]] != a:
            heapq.heappop(self.heap)
        best = self.chunk[self.pos] if self.pos < len(self.chunk) else None
        if self.heap and (best is None or self.heap[0] < best):
            best = self.heap[0]
        return best

    def push(self, key: float, point: int) -> None:
        heapq.heappush(self.heap, (key, point))


def _nearest(reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a (k, n) array: the argmin (first on ties) and the gap to the second smallest."""
    labels = np.zeros(reduced.shape[1], dtype=np.int64)
    best, second = reduced[0].copy(), np.full(reduced.shape[1], np.inf)
    for j in range(1, reduced.shape[0]):
        row = reduced[j]
        labels = np.where(row < best, j, labels)
        np.minimum(second, np.maximum(best, row), out=second)
        np.minimum(best, row, out=best)
    return labels, second - best


def _is_optimal(sizes: np.ndarray, prices: np.ndarray, floor: int, extra: int) -> bool:
    """Complementary slackness for points already on argmin(C - prices): balanced, extras on the cheapest."""
    big = sizes > floor
    if sizes.min() < floor or sizes.max() > floor + 1 or int(big.sum()) != extra:
        return False
    return extra == 0 or prices[big].max() <= prices[~big].min()


def _targets(floor: int, extra: int, fixed: np.ndarray) -> np.ndarray:
    """Sizes to aim for when `fixed` points already sit in each cluster (the extra slots on the first clusters)."""
    return np.maximum(floor + (np.arange(len(fixed)) < extra) - fixed, 0)


def _warm_prices(cost_t: np.ndarray, prices: np.ndarray, targets: np.ndarray,
                 enough: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact dual coordinate ascent until the sizes miss `targets` by `enough`; returns prices, labels, margins."""
    k, n = cost_t.shape
    prices = prices.copy()
    reduced = cost_t - prices[:, None]  # reduced costs; row j is refreshed whenever prices[j] changes
    last, rounds = np.inf, 0
    while True:
        labels, margin = _nearest(reduced)
        excess = int(np.abs(np.bincount(labels, minlength=k) - targets).sum())
        if rounds == _WARM_ROUNDS or excess <= enough or excess > last / 2:  # close enough, or no longer halving
            return prices, labels, margin
        last, rounds = excess, rounds + 1
        for j in range(k):
            reduced[j] = np.inf
            gap = cost_t[j] - reduced.min(axis=0)  # point i prefers j iff gap[i] < prices[j]
            t = int(targets[j])
            if t == 0:
                prices[j] = gap.min() - 1.0
            elif t >= n:
                prices[j] = gap.max() + 1.0
            else:
                lo_hi = np.partition(gap, (t - 1, t))
                prices[j] = 0.5 * (lo_hi[t - 1] + lo_hi[t])
            reduced[j] = cost_t[j] - prices[j]


def _augment(cost_t: np.ndarray, labels: np.ndarray, prices: np.ndarray, excess: list[int],
             extra: int) -> np.ndarray:
    """Successive shortest paths on the cluster graph until no excess is left; updates `labels`, returns prices."""
    k = cost_t.shape[0]
    node_e = k  # the "one extra point" node, used when n mod k > 0
    nodes = k + 1 if extra else k
    pot = np.append(prices, prices.min()).tolist() if extra else prices.tolist()
    used = [False] * k
    excess = excess + ([-extra] if extra else [])
    if not any(e > 0 for e in excess):
        return prices
    queues: list[list[_PairQueue] | None] = [None] * k  # per cluster a: one queue per target b, built on first use

    def out_of(a: int) -> list[_PairQueue]:
        if queues[a] is None:
            members = np.flatnonzero(labels == a)
            keys = cost_t[:, members] - cost_t[a, members]
            queues[a] = [_PairQueue(members, keys[b]) for b in range(k)]
        return queues[a]

    inf = float("inf")
    while True:
        sources = [v for v in range(nodes) if excess[v] > 0]
        if not sources:
            break
        # Dijkstra from every over-full node at once on the (k [+1])-node residual graph.
        dist = [inf] * nodes
        pred: list[tuple[int, tuple[float, int] | None]] = [(-1, None)] * nodes
        done = [False] * nodes
        for s in sources:
            dist[s] = 0.0
        while True:
            u, du = -1, inf
            for v in range(nodes):
                if not done[v] and dist[v] < du:
                    u, du = v, dist[v]
            if u < 0:
                break
            done[u] = True
            if excess[u] < 0:
                break  # nearest under-full node: the labels of the rest are not needed
            if u == node_e:
                arcs = [(j, pot[u] - pot[j], None) for j in range(k) if used[j]]
            else:
                arcs = [(b, top[0] + pot[u] - pot[b], top) for b in range(k)
                        if b != u and (top := out_of(u)[b].peek(labels, u)) is not None]
                if extra and not used[u]:
                    arcs.append((node_e, pot[u] - pot[node_e], None))
            for v, length, top in arcs:
                nd = du + max(length, 0.0)
                if not done[v] and nd < dist[v]:
                    dist[v], pred[v] = nd, (u, top)
        t, dt = u, dist[u]
        for v in range(nodes):
            pot[v] += min(dist[v], dt)
        v = t
        while pred[v][0] >= 0:  # walk back to the source, moving one unit along each arc
            u, top = pred[v]
            if v == node_e:
                used[u] = True
            elif u == node_e:
                used[v] = False
            else:
                point = top[1]
                labels[point] = v
                if queues[v] is not None:  # a queue built later finds the point itself
                    row = cost_t[:, point]
                    for x in range(k):
                        if x != v:
                            queues[v][x].push(float(row[x] - row[v]), point)
            v = u
        excess[v] -= 1
        excess[t] += 1
    return np.asarray(pot[:k])


def _solve(cost_t: np.ndarray, prices: np.ndarray, fixed: np.ndarray, floor: int,
           extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact assignment of the columns of `cost_t` when `fixed[j]` points outside it already sit in cluster j."""
    enough = max(_WARM_EXCESS, cost_t.shape[1] // 500)
    prices, labels, _ = _warm_prices(cost_t, prices, _targets(floor, extra, fixed), enough)
    excess = np.bincount(labels, minlength=len(fixed)) + fixed - floor
    return labels, _augment(cost_t, labels, prices, excess.tolist(), extra)


def _near_boundary(lower: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    """The points whose margin bound is below tau ~ the m-th smallest bound (from a strided sample), and tau."""
    stride = max(1, m // 16)
    sample = lower[::stride]
    q = min(len(sample) - 1, m // stride)
    tau = float(np.partition(sample, q)[q])
    return np.flatnonzero(lower < tau), tau


def _solve_near_boundary(labels: np.ndarray, lower: np.ndarray, prices: np.ndarray,
                         exact_t: Callable[[np.ndarray], np.ndarray], limit: int, floor: int,
                         extra: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Re-solve only the points closest to a cluster boundary; None when that takes `limit` points or more.

    `lower` bounds every point's true margin from below; `exact_t(idx)` gives the true (k, m) costs.
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
            near_labels, new_prices = _solve(exact_t(near), prices, fixed, floor, extra)
            shift = new_prices - prices
            spread = shift.max() - shift.min()
            if spread <= tau:
                labels = labels.copy()
                labels[near] = near_labels
                return labels, new_prices
        # Next try: at least twice the points, and enough for tau to clear the spread just seen.
        m = max(2 * m, int(np.count_nonzero(lower < _NEAR_SPREAD_SAFETY * spread)))
    return None


def _transposed(cost: np.ndarray) -> np.ndarray:
    return np.array(cost.T, dtype=np.float64, order="C")  # (k, n): fast row-wise passes


def balanced_assignment(cost: np.ndarray, prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Assign each row of `cost` (n, k) to a column, minimising the total, with balanced column counts.

    Args:
        cost: costs (float32 or float64); row i, column j = cost of putting point i in cluster j.
        prices: optional dual prices from a previous call (warm start; same k).

    Returns:
        (labels (n,) int64, prices (k,) float64 to warm-start the next call).
    """
    n, k = cost.shape
    cost_t = _transposed(cost)
    floor, extra = cluster_sizes(n, k)
    w = np.zeros(k) if prices is None else np.asarray(prices, dtype=np.float64)
    if k == 1:
        return np.zeros(n, dtype=np.int64), w
    no_fixed = np.zeros(k, dtype=np.int64)
    w, labels, margin = _warm_prices(cost_t, w, _targets(floor, extra, no_fixed), n // _NEAR_SHARE)
    if _is_optimal(np.bincount(labels, minlength=k), w, floor, extra):
        return labels, w
    solved = _solve_near_boundary(labels, margin, w, lambda idx: cost_t[:, idx], n // 2, floor, extra)
    return solved if solved is not None else _solve(cost_t, w, no_fixed, floor, extra)


def balanced_assignment_within(cost: np.ndarray, prices: np.ndarray, errors: np.ndarray,
                               exact_cost: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact balanced assignment when column j of `cost` (n, k) is only known to within `errors[j]`.

    Only the points near a boundary get their true costs, `exact_cost(indices)` (m, k); the others
    provably keep their cluster. Returns None when n / _WITHIN_SHARE points or more would need true
    costs (fetching scattered rows then costs about as much as computing every cost afresh).
    """
    n, k = cost.shape
    if k == 1:
        return np.zeros(n, dtype=np.int64), prices
    # A point in cluster a: its margin to any b can be off by errors[a] + errors[b].
    top = np.argmax(errors)
    slack = errors + np.where(np.arange(k) == top, np.partition(errors, k - 2)[k - 2], errors[top])
    labels, margin = _nearest(_transposed(cost[::_SAMPLE_STRIDE]) - prices[:, None])
    if np.count_nonzero(margin < slack[labels]) * _WITHIN_SHARE >= len(labels):
        return None  # a cheap first look: too many margins are within the error
    labels, margin = _nearest(_transposed(cost) - prices[:, None])
    return _solve_near_boundary(labels, margin - slack[labels], prices, lambda idx: _transposed(exact_cost(idx)),
                                n // _WITHIN_SHARE, *cluster_sizes(n, k))
