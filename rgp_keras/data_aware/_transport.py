"""Channels to groups of fixed sizes, maximising the summed score: an exact transportation solver.

Channel assignment puts each of c channels into one of n groups of given sizes
(n small: RGP's nodes). As a c x c linear assignment (each group's column
repeated once per slot) it costs O(c^3), with ties among the repeated columns:
3.5 s a call for ResNet50's 2048-channel space, 33 of its 227 s of data-aware
pruning in a profile. Here the channels enter one at a time, each along the
shortest augmenting path of the min-cost flow (channel -> group, or on through
groups by moving one channel from each to the next), found by Bellman-Ford on the
n groups: O(c^2 n) for the path weights, exact as successive shortest paths are.
numba compiles it on first use and caches the machine code on disk.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def best_groups(score, sizes):
    """The group of each channel (rows of `score`, channels x groups) maximising the summed score, with
    `sizes[g]` channels in group g (sizes sum to the channels)."""
    channels, groups = score.shape
    cost = -score.astype(np.float64)
    scale = np.abs(cost).max()
    if scale > 0:
        cost /= scale  # so that the tolerance below is relative (importances may be ~1e-12)
    group = np.full(channels, -1, np.int64)
    count = np.zeros(groups, np.int64)
    step = np.empty((groups, groups))  # cheapest move of one channel from group g to h
    mover = np.empty((groups, groups), np.int64)
    distance, previous = np.empty(groups), np.empty(groups, np.int64)
    for new in range(channels):
        step[:] = np.inf
        for j in range(new):
            g = group[j]
            for h in range(groups):
                change = cost[j, h] - cost[j, g]
                if h != g and change < step[g, h]:
                    step[g, h], mover[g, h] = change, j
        for h in range(groups):
            distance[h], previous[h] = cost[new, h], -1
        for _ in range(groups - 1):  # no negative cycles: the assignment so far is optimal
            changed = False
            for g in range(groups):
                for h in range(groups):
                    if distance[g] + step[g, h] < distance[h] - 1e-12:
                        distance[h], previous[h], changed = distance[g] + step[g, h], g, True
            if not changed:
                break
        end = -1
        for h in range(groups):
            if count[h] < sizes[h] and (end < 0 or distance[h] < distance[end]):
                end = h
        count[end] += 1
        h, moves = end, 0
        while previous[h] >= 0:  # move each channel on the path one group along it
            g = previous[h]
            group[mover[g, h]] = h
            h, moves = g, moves + 1
            if moves > groups:
                raise RuntimeError("best_groups: a cycle in the shortest-path tree")
        group[new] = h
    return group
