"""Graph -> kernel masks (numpy only), and whether a layer carries a maskable kernel (read off the registry).

A layer's input channels and output channels are each split into `graph.nodes`
groups; the weights joining input group i to output group j are kept iff
(i, j) is an edge of the graph. For a convolution the whole spatial kernel of
a kept (in, out) channel pair is kept.
"""

import numpy as np

from rgp_keras._checks import check_int
from rgp_keras.errors import InputValueError
from rgp_keras.masking.layer_types import KERNEL_LAYOUTS, layer_type


def channel_groups(channels, nodes, seed=None):
    """The group (0..nodes-1) of each of `channels` channels; group sizes differ by at most one.

    Without a seed the groups are contiguous runs of channels (what compact
    export needs); with a seed the same group sizes are assigned to a random
    permutation of the channels.

    Example:
    >>> channel_groups(10, 4).tolist()
    [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    """
    channels = check_int("channels", channels, minimum=1)
    nodes = check_int("nodes", nodes, minimum=1)
    if channels < nodes:
        raise InputValueError(
            f"Cannot split {channels} channels into {nodes} groups: RGP needs at least as many "
            f"channels as graph nodes (use fewer nodes, or leave this layer dense)."
        )
    groups = np.arange(channels) * nodes // channels
    if seed is not None:
        groups = np.random.default_rng(seed).permutation(groups)
    return groups


def group_mask(graph, self_loops=False):
    """`(nodes, nodes)` boolean: which (input group, output group) blocks are kept."""
    blocks = np.array(graph.adjacency, dtype=bool)
    if self_loops:
        blocks |= np.eye(graph.nodes, dtype=bool)
    return blocks


def kernel_mask(graph, kernel_shape, layout, self_loops=False):
    """Boolean mask of `kernel_shape`: True where the weight is kept.

    Args:
        graph: a `RegularGraph`.
        kernel_shape: shape of the kernel to mask.
        layout: "dense" `(in, out)`; "conv" `(..., in, out)` (Conv1D/2D/3D and
            the pointwise kernel of separable convolutions); "conv_transpose"
            `(..., out, in)`.
        self_loops: also keep the blocks joining group i to group i (the
            relational-graph variant, density (k + 1) / n).

    Returns:
        A boolean array; its mean is k/n ((k+1)/n with self-loops) exactly
        when both channel counts divide by the node count.

    Example:
    >>> from rgp_keras.graph import RegularGraph
    >>> mask = kernel_mask(RegularGraph.ring_lattice(8, 2), (3, 3, 16, 32), "conv")
    >>> float(mask.mean())
    0.25
    """
    if layout not in KERNEL_LAYOUTS:
        raise InputValueError(f"`layout` must be one of {KERNEL_LAYOUTS}, got {layout!r}.")
    kernel_shape = tuple(int(d) for d in kernel_shape)
    wanted_rank = 2 if layout == "dense" else 3
    if len(kernel_shape) < wanted_rank or (layout == "dense" and len(kernel_shape) != 2):
        raise InputValueError(f"A {layout!r} kernel has rank {'2' if layout == 'dense' else '>= 3'}, got shape "
                              f"{kernel_shape}.")
    in_axis, out_axis = (-1, -2) if layout == "conv_transpose" else (-2, -1)
    in_groups = channel_groups(kernel_shape[in_axis], graph.nodes)
    out_groups = channel_groups(kernel_shape[out_axis], graph.nodes)
    pairs = group_mask(graph, self_loops)[in_groups[:, None], out_groups[None, :]]
    if layout == "conv_transpose":
        pairs = pairs.T
    return np.broadcast_to(pairs, kernel_shape).copy()


def prunable_kernel(layer):
    """`(kernel attribute, layout)` for a layer type RGP can mask, else `(None, reason)`.

    Only the layer type and its settings are looked at here; whether the layer
    has enough channels for the graph is decided with the graph.
    """
    _, kind = layer_type(layer)
    if kind is not None and kind.not_prunable:
        return None, kind.not_prunable
    if kind is None or kind.kernel is None:
        return None, f"{type(layer).__name__} has no channel-pair kernel"
    if getattr(layer, "groups", 1) != 1:
        return None, f"grouped convolution (groups={layer.groups}): channel pairs are already sparse"
    return kind.kernel, kind.layout


def kernel_channels(kernel_shape, layout):
    """`(in_channels, out_channels)` of a kernel in `layout`."""
    if layout == "conv_transpose":
        return kernel_shape[-1], kernel_shape[-2]
    return kernel_shape[-2], kernel_shape[-1]


def kept_pairs(kernel):
    """`(in, out)` boolean of a kernel `(..., in, out)`: which channel pairs have a non-zero weight."""
    return np.any(kernel.reshape(-1, *kernel.shape[-2:]) != 0, axis=0)


def channel_blocks(kernel):
    """The coarsest channel-group blocks explaining a kernel's zeros, or None.

    For a kernel `(..., in, out)` returns a boolean `(n, n)` array `blocks`
    (input group, output group) with contiguous groups as in
    `channel_groups`, for the node count n giving the lowest block density
    (max kept blocks per output group / n); None when no n gives density < 1.
    """
    pairs = kept_pairs(kernel)
    if pairs.all():
        return None
    channels_in, channels_out = pairs.shape
    row_changes = np.flatnonzero(np.any(pairs[1:] != pairs[:-1], axis=1)) + 1
    col_changes = np.flatnonzero(np.any(pairs[:, 1:] != pairs[:, :-1], axis=0)) + 1
    best, best_density = None, 1.0
    for nodes in range(2, min(channels_in, channels_out) + 1):
        starts = _are_group_starts(row_changes, channels_in, nodes), _are_group_starts(col_changes, channels_out, nodes)
        if not all(starts):
            continue
        starts_in = np.unique(channel_groups(channels_in, nodes), return_index=True)[1]
        starts_out = np.unique(channel_groups(channels_out, nodes), return_index=True)[1]
        blocks = pairs[starts_in][:, starts_out]
        density = blocks.sum(axis=0).max() / nodes
        if 0 < density < best_density:
            best, best_density = blocks, density
    return best


def _are_group_starts(positions, channels, nodes):
    return bool(np.all(positions * nodes // channels != (positions - 1) * nodes // channels))
