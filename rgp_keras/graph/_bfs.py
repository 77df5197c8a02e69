"""Bit-parallel all-sources BFS over a batch of graphs of the same size and degree.

Every node holds a bitset of the sources that have reached it; one BFS level is
an OR over the neighbours' bitsets, and a popcount tells how many (source,
node) pairs are newly reached. Evaluating a batch of graphs in one pass spreads
numpy's per-call overhead over all of them. `RegularGraph` uses it for its own
statistics without compiling anything; `optimize` scores swaps with the
compiled version in `_anneal`.
"""

import numpy as np

_WORD = 64


def _identity_bits(nodes):
    words = -(-nodes // _WORD)
    bits = np.zeros((nodes, words), dtype=np.uint64)
    index = np.arange(nodes)
    bits[index, index // _WORD] = np.left_shift(
        np.uint64(1), (index % _WORD).astype(np.uint64)
    )
    return bits


def distance_stats(neighbors, max_levels=None):
    """Sum of shortest-path distances and diameter of each graph in a batch.

    Args:
        neighbors: int array `(batch, nodes, degree)`, the neighbour lists.
        max_levels: stop after this many BFS levels; a graph not fully
            reached by then counts as failed. `None` searches to the end.

    Returns:
        `(totals, diameters)`: int64 arrays of shape `(batch,)`. `totals` is the
        sum of distances over unordered node pairs. Graphs that are
        disconnected, or whose diameter exceeds `max_levels`, get -1 in both.
    """
    batch, nodes, degree = neighbors.shape
    limit = nodes - 1 if max_levels is None else min(max_levels, nodes - 1)
    reached = np.tile(_identity_bits(nodes), (batch, 1))
    offsets = (np.arange(batch, dtype=np.intp) * nodes)[:, None]
    # One contiguous index row per neighbour slot: `take` + in-place OR is
    # several times faster than a fancy-index gather and `bitwise_or.reduce`.
    columns = np.ascontiguousarray((neighbors + offsets[:, :, None]).reshape(-1, degree).T)
    frontier = np.empty_like(reached)
    gathered = np.empty_like(reached)
    full = nodes * nodes
    counts = np.full(batch, nodes, dtype=np.int64)
    totals = np.zeros(batch, dtype=np.int64)
    diameters = np.full(batch, -1, dtype=np.int64)
    for level in range(1, limit + 1):
        reached.take(columns[0], axis=0, out=frontier)
        for column in columns[1:]:
            reached.take(column, axis=0, out=gathered)
            frontier |= gathered
        reached |= frontier
        new_counts = np.bitwise_count(reached).reshape(batch, -1).sum(axis=1, dtype=np.int64)
        totals += level * (new_counts - counts)
        finished = (new_counts == full) & (diameters < 0)
        diameters[finished] = level
        stalled = new_counts == counts
        counts = new_counts
        if np.all((counts == full) | stalled):
            break
    failed = diameters < 0
    totals //= 2
    totals[failed] = -1
    diameters[failed] = -1
    return totals, diameters
