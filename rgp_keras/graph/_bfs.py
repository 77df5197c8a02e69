"""Bit-parallel all-sources BFS in numpy, for a graph's own statistics.

Every node holds a bitset of the sources that have reached it; one BFS level is
an OR over the neighbours' bitsets, and a popcount tells how many (source,
node) pairs are newly reached. `RegularGraph` uses it so that building or
loading a graph never compiles anything; `optimize` scores swaps with the
compiled version in `_anneal`.
"""

import numpy as np

_WORD = 64


def distance_stats(neighbors):
    """Sum of shortest-path distances over unordered node pairs, and the diameter.

    Args:
        neighbors: int array `(nodes, degree)`, the neighbour lists.

    Returns:
        `(total, diameter)` as ints, or `(-1, -1)` when the graph is disconnected.
    """
    nodes = neighbors.shape[0]
    words = -(-nodes // _WORD)
    reached = np.zeros((nodes, words), dtype=np.uint64)
    index = np.arange(nodes)
    reached[index, index // _WORD] = np.left_shift(np.uint64(1), (index % _WORD).astype(np.uint64))
    # One contiguous index row per neighbour slot: `take` + in-place OR is
    # several times faster than a fancy-index gather and `bitwise_or.reduce`.
    columns = np.ascontiguousarray(neighbors.T)
    frontier = np.empty_like(reached)
    gathered = np.empty_like(reached)
    count, total, level = nodes, 0, 0
    while count < nodes * nodes:
        level += 1
        reached.take(columns[0], axis=0, out=frontier)
        for column in columns[1:]:
            reached.take(column, axis=0, out=gathered)
            frontier |= gathered
        reached |= frontier
        new_count = int(np.bitwise_count(reached).sum(dtype=np.int64))
        if new_count == count:
            return -1, -1
        total += level * (new_count - count)
        count = new_count
    return total // 2, level
