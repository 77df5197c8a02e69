"""Which channels a compact layer's groups hold and read (shared by the layouts and their latency estimate)."""

import numpy as np

from rgp_keras.masking.masks import channel_groups


def group_members(channels, nodes):
    """`(nodes, max group size)` channel indices per group, -1 where a smaller group is padded."""
    groups = channel_groups(channels, nodes)
    size = np.bincount(groups).max()
    members = np.full((nodes, size), -1)
    for g in range(nodes):
        chosen = np.flatnonzero(groups == g)
        members[g, : len(chosen)] = chosen
    return members


def gathered_channels(blocks, channels_in):
    """`(n, k x group size)`: the input channels each output group reads (the input groups of its block mask
    column in turn), -1 where a group is padded (uneven groups, or fewer than k groups read)."""
    nodes = len(blocks)
    in_members = group_members(channels_in, nodes)
    degree = int(blocks.sum(axis=0).max())
    # neighbours[j]: the input groups output group j reads, padded with a group of only -1 up to `degree`
    neighbours = np.full((nodes, degree), nodes)
    for j in range(nodes):
        reads = np.flatnonzero(blocks[:, j])
        neighbours[j, : len(reads)] = reads
    in_members = np.vstack([in_members, np.full(in_members.shape[1], -1)])
    return in_members[neighbours].reshape(nodes, -1)


def channel_runs(index):
    """Channel indices as (start, stop) runs of consecutive channels, in order."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(index, breaks)]
