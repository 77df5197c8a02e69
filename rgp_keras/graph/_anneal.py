"""The compiled inner loop of `optimize`: double-edge swaps scored by a bit-parallel BFS.

One attempt draws two directed edges (a, b), (c, d), rewires them to (a, d),
(c, b) in place (with every rotation of them by the symmetry period), scores
the new graph and undoes the swap if it is rejected. Scoring is a BFS from all
sources at once (from one node per rotation orbit under symmetry) where each
node holds a bitset of the sources that have reached it; a level ORs the
neighbours' frontier bitsets. Because the acceptance threshold is drawn before
scoring, the BFS stops as soon as the distances found so far plus a lower
bound for the pairs not yet reached exceed it, which ends most rejected
attempts after two or three levels.

Distance sums here are over ordered pairs (twice the unordered sum). numba
compiles the module on first use and caches the machine code on disk.
"""

import sys

import numba
import numpy as np

MIN, MAX, TARGET = 0, 1, 2
# `state` slots shared with the Python driver.
TOTAL, DIAMETER, BEST_TOTAL, BEST_DIAMETER, ATTEMPTS, SINCE_BEST, RECORDS = range(7)
REJECTED = -1
NEVER = 1 << 62  # a bound no distance sum reaches
RANDOM, NEAR, FAR = range(3)
OPERATORS = 3
SAMPLE = 16  # draws scored per NEAR / FAR proposal
PURSUIT_RATE = 0.02
PURSUIT_FLOOR = 0.1  # no operator's probability falls below this

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@numba.njit(cache=True)
def distance_sum(neighbors, sources, bound, reach, frontier, fresh):
    """Sum of the distances from nodes 0 .. `sources` - 1 to all nodes and the largest
    of them, or (REJECTED, REJECTED) when the graph is disconnected or the sum
    surely exceeds `bound`. `reach`, `frontier`, `fresh` are (n, words) uint64
    scratch arrays with 64 * words >= sources."""
    nodes, degree = neighbors.shape
    words = reach.shape[1]
    reach[:] = 0
    frontier[:] = 0
    for v in range(sources):
        bit = np.uint64(1) << np.uint64(v & 63)
        reach[v, v >> 6] = bit
        frontier[v, v >> 6] = bit
    full = nodes * sources
    reached, total, level = sources, 0, 0
    while reached < full:
        level += 1
        newly = 0
        for v in range(nodes):
            for w in range(words):
                acc = np.uint64(0)
                for j in range(degree):
                    acc |= frontier[neighbors[v, j], w]
                acc &= ~reach[v, w]
                fresh[v, w] = acc
                reach[v, w] |= acc
                newly += _popcount(acc)
        if newly == 0:
            return REJECTED, REJECTED
        reached += newly
        total += level * newly
        if total + (level + 1) * (full - reached) > bound:
            return REJECTED, REJECTED
        frontier, fresh = fresh, frontier
    return total, level


@numba.njit(cache=True)
def scratch(nodes, sources):
    """The three bitset arrays `distance_sum` works in."""
    shape = (nodes, (sources + 63) // 64)
    return np.empty(shape, dtype=np.uint64), np.empty(shape, dtype=np.uint64), np.empty(shape, dtype=np.uint64)


@numba.njit(cache=True)
def seed(value):
    np.random.seed(value)


@numba.njit(cache=True)
def _slot(neighbors, node, other):
    for j in range(neighbors.shape[1]):
        if neighbors[node, j] == other:
            return j
    return -1


@numba.njit(cache=True)
def _rewire(neighbors, adjacency, a, b, c, d):
    """Replace edges (a, b), (c, d) by (a, d), (c, b)."""
    neighbors[a, _slot(neighbors, a, b)] = d
    neighbors[b, _slot(neighbors, b, a)] = c
    neighbors[c, _slot(neighbors, c, d)] = b
    neighbors[d, _slot(neighbors, d, c)] = a
    adjacency[a, b] = adjacency[b, a] = adjacency[c, d] = adjacency[d, c] = False
    adjacency[a, d] = adjacency[d, a] = adjacency[c, b] = adjacency[b, c] = True


@numba.njit(cache=True)
def _swap_orbit(neighbors, adjacency, a, b, c, d, period):
    """Apply the swap to (a, b), (c, d) and all their rotations by multiples of
    `period`; return False, changing nothing, when one of them is invalid or two
    collide (the graph would not stay simple or rotation-invariant)."""
    nodes = neighbors.shape[0]
    # Check every rotation against the graph as it is, then again while applying
    # them: together this catches rotations that remove or add the same edge.
    for shift in range(0, nodes, period):
        if not _valid(adjacency, (a + shift) % nodes, (b + shift) % nodes, (c + shift) % nodes, (d + shift) % nodes):
            return False
    for shift in range(0, nodes, period):
        ai, bi, ci, di = (a + shift) % nodes, (b + shift) % nodes, (c + shift) % nodes, (d + shift) % nodes
        if not _valid(adjacency, ai, bi, ci, di):
            for back in range(shift - period, -1, -period):
                _rewire(neighbors, adjacency, (a + back) % nodes, (d + back) % nodes,
                        (c + back) % nodes, (b + back) % nodes)
            return False
        _rewire(neighbors, adjacency, ai, bi, ci, di)
    return True


@numba.njit(cache=True)
def _bfs(neighbors, source, dist, queue):
    """Distances from `source` into `dist` (one ordinary BFS)."""
    dist[:] = -1
    dist[source] = 0
    queue[0] = source
    head, tail = 0, 1
    while head < tail:
        v = queue[head]
        head += 1
        for u in neighbors[v]:
            if dist[u] < 0:
                dist[u] = dist[v] + 1
                queue[tail] = u
                tail += 1


@numba.njit(cache=True)
def _energy(mode, goal, total):
    if mode == MIN:
        return total
    if mode == MAX:
        return -total
    return abs(total - goal)


@numba.njit(cache=True)
def _valid(adjacency, a, b, c, d):
    """Edges (a, b), (c, d) exist and swapping them for (a, d), (c, b) keeps the graph simple."""
    return (
        a != c and a != d and b != c and b != d
        and adjacency[a, b] and adjacency[c, d] and not adjacency[a, d] and not adjacency[c, b]
    )


@numba.njit(cache=True)
def _propose(neighbors, adjacency, operator, dist_a, dist_b, queue, drawn):
    """Two directed edges (a, b), (c, d) whose swap keeps the graph simple, or -1s.

    (a, b) is uniform. RANDOM draws (c, d) uniformly; NEAR and FAR take, of
    SAMPLE uniform draws, the valid one with the smallest or largest
    dist(a, d) + dist(b, c): local rewirings or long shortcuts. The BFS for
    the distances runs only when there is a choice to make. `drawn` is a
    (SAMPLE, 2) scratch array.
    """
    nodes, degree = neighbors.shape
    first = np.random.randint(nodes * degree)
    a, b = first // degree, neighbors[first // degree, first % degree]
    valid = 0
    for _ in range(1 if operator == RANDOM else SAMPLE):
        second = np.random.randint(nodes * degree)
        c, d = second // degree, neighbors[second // degree, second % degree]
        if _valid(adjacency, a, b, c, d):
            drawn[valid, 0], drawn[valid, 1] = c, d
            valid += 1
    if valid == 0:
        return a, b, -1, -1
    chosen = 0
    if valid > 1:
        _bfs(neighbors, a, dist_a, queue)
        _bfs(neighbors, b, dist_b, queue)
        sign = -1 if operator == NEAR else 1
        for i in range(1, valid):
            if sign * (dist_a[drawn[i, 1]] + dist_b[drawn[i, 0]]) > sign * (
                dist_a[drawn[chosen, 1]] + dist_b[drawn[chosen, 0]]
            ):
                chosen = i
    return a, b, drawn[chosen, 0], drawn[chosen, 1]


@numba.njit(cache=True)
def _pick(probabilities):
    draw = np.random.random()
    for operator in range(OPERATORS - 1):
        draw -= probabilities[operator]
        if draw < 0:
            return operator
    return OPERATORS - 1


@numba.njit(cache=True)
def anneal(neighbors, adjacency, best, state, history, operators, mode, goal, temperatures, patience, stop_energy,
           period):
    """Make one attempt per entry of `temperatures` (0 = greedy) unless the chain stops early.

    Updates `neighbors`, `adjacency`, `best` (the best neighbour lists seen, by
    (diameter, sum) for MIN and by energy otherwise), `state` and `operators`
    (row 0: probability of each proposal operator, row 1: its recent mean
    gain; adaptive pursuit moves the probabilities towards the best one) in
    place, and appends (attempt, sum, diameter) rows to `history` on each new
    best. Returns True when the chain is done: `stop_energy` reached,
    `patience` exhausted, or no valid swap could be drawn.
    """
    nodes, degree = neighbors.shape
    copies = nodes // period
    reach, frontier, fresh = scratch(nodes, period)
    dist_a = np.empty(nodes, dtype=np.int64)
    dist_b = np.empty(nodes, dtype=np.int64)
    queue = np.empty(nodes, dtype=np.int64)
    drawn = np.empty((SAMPLE, 2), dtype=np.int64)
    low = PURSUIT_FLOOR
    high = 1.0 - (OPERATORS - 1) * low
    for temperature in temperatures:
        for _ in range(100 * nodes * degree):
            operator = _pick(operators[0])
            a, b, c, d = _propose(neighbors, adjacency, operator, dist_a, dist_b, queue, drawn)
            if c >= 0 and _swap_orbit(neighbors, adjacency, a, b, c, d, period):
                break
        else:
            return True
        current = _energy(mode, goal, state[TOTAL])
        slack = -temperature * np.log(1.0 - np.random.random()) if temperature > 0 else 0.0
        limit = current + slack
        bound = NEVER
        if mode == MIN:
            bound = int(limit)
        elif mode == TARGET:
            bound = int(goal + limit)
        total, diameter = distance_sum(neighbors, period, bound // copies, reach, frontier, fresh)
        total *= copies
        state[ATTEMPTS] += 1
        state[SINCE_BEST] += 1
        gain = 0.0
        if total < 0 or _energy(mode, goal, total) > limit:
            _swap_orbit(neighbors, adjacency, a, d, c, b, period)
        else:
            gain = max(0.0, float(current - _energy(mode, goal, total)))
            state[TOTAL], state[DIAMETER] = total, diameter
            if mode == MIN:
                better = (diameter, total) < (state[BEST_DIAMETER], state[BEST_TOTAL])
            else:
                better = _energy(mode, goal, total) < _energy(mode, goal, state[BEST_TOTAL])
            if better:
                state[BEST_TOTAL], state[BEST_DIAMETER], state[SINCE_BEST] = total, diameter, 0
                best[:] = neighbors
                if state[RECORDS] < history.shape[0]:
                    row = history[state[RECORDS]]
                    row[0], row[1], row[2] = state[ATTEMPTS], total, diameter
                    state[RECORDS] += 1
                if _energy(mode, goal, total) <= stop_energy:
                    return True
        gains = operators[1]
        gains[operator] += PURSUIT_RATE * (gain - gains[operator])
        leader = np.argmax(gains)
        for i in range(OPERATORS):
            operators[0, i] += PURSUIT_RATE * ((high if i == leader else low) - operators[0, i])
        if patience and state[SINCE_BEST] >= patience:
            return True
    return False


@numba.njit(cache=True)
def scramble(neighbors, adjacency, period, swaps):
    """Make `swaps` random orbit swaps that keep the graph connected (a random walk)."""
    nodes, degree = neighbors.shape
    reach, frontier, fresh = scratch(nodes, period)
    unused = np.empty(nodes, dtype=np.int64)
    drawn = np.empty((1, 2), dtype=np.int64)
    for _ in range(swaps):
        a, b, c, d = _propose(neighbors, adjacency, RANDOM, unused, unused, unused, drawn)
        if c >= 0 and _swap_orbit(neighbors, adjacency, a, b, c, d, period):
            if distance_sum(neighbors, period, NEVER, reach, frontier, fresh)[0] < 0:
                _swap_orbit(neighbors, adjacency, a, d, c, b, period)


@numba.njit(cache=True)
def typical_change(neighbors, adjacency, period, samples):
    """Median absolute change of the (ordered) distance sum over `samples` random
    connected orbit swaps, each undone; 0 when none could be drawn."""
    nodes, degree = neighbors.shape
    copies = nodes // period
    reach, frontier, fresh = scratch(nodes, period)
    unused = np.empty(nodes, dtype=np.int64)
    drawn = np.empty((1, 2), dtype=np.int64)
    start = distance_sum(neighbors, period, NEVER, reach, frontier, fresh)[0]
    changes = np.zeros(samples)
    found = 0
    for _ in range(10 * samples):
        if found == samples:
            break
        a, b, c, d = _propose(neighbors, adjacency, RANDOM, unused, unused, unused, drawn)
        if c >= 0 and _swap_orbit(neighbors, adjacency, a, b, c, d, period):
            total = distance_sum(neighbors, period, NEVER, reach, frontier, fresh)[0]
            _swap_orbit(neighbors, adjacency, a, d, c, b, period)
            if total >= 0:
                changes[found] = abs(total - start) * copies
                found += 1
    return np.median(changes[:found]) if found else 0.0


_ENTRY_POINTS = (seed, typical_change, anneal, scramble)
_announced = False


def announce_compilation():
    """Say once per process, on stderr, when numba has no valid machine code cached for the optimiser:
    the first call then stalls ~10 s compiling (later processes load it from disk in well under a second)."""
    global _announced
    if _announced:
        return
    _announced = True
    try:  # numba's cache index, as numba itself reads it: empty when missing or stale (source changed)
        cached = all(function._cache._cache_file._load_index() for function in _ENTRY_POINTS)
    except AttributeError:  # another numba layout: stay quiet rather than guess
        cached = True
    if not cached:
        print(
            "rgp_keras: compiling the graph optimiser (one time, ~10 s; cached on disk afterwards)",
            file=sys.stderr,
            flush=True,
        )
