"""Tests for rgp_keras.masking.masks: channel groups and kernel masks (numpy only)."""

import numpy as np
import pytest

from rgp_keras.graph import RegularGraph
from rgp_keras.masking.masks import channel_groups, kernel_mask


@pytest.mark.parametrize("channels, nodes", [(64, 64), (96, 64), (100, 16), (17, 16), (256, 64)])
def test_channel_groups_sizes_differ_by_at_most_one(channels, nodes):
    groups = channel_groups(channels, nodes)
    sizes = np.bincount(groups, minlength=nodes)
    assert sizes.sum() == channels and sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    assert np.all(np.diff(groups) >= 0)  # contiguous without a seed
    shuffled = channel_groups(channels, nodes, seed=0)
    assert np.array_equal(np.bincount(shuffled, minlength=nodes), sizes)
    assert np.array_equal(shuffled, channel_groups(channels, nodes, seed=0))


def test_channel_groups_rejects_fewer_channels_than_nodes():
    with pytest.raises(ValueError, match="Cannot split 10 channels into 16 groups"):
        channel_groups(10, 16)


@pytest.fixture(scope="module")
def graph():
    return RegularGraph.random(16, 4, seed=0)


def test_dense_mask_keeps_exactly_the_graph_edges(graph):
    mask = kernel_mask(graph, (64, 32), "dense")
    in_groups, out_groups = channel_groups(64, 16), channel_groups(32, 16)
    for i in range(64):
        for j in range(32):
            assert mask[i, j] == graph.adjacency[in_groups[i], out_groups[j]]
    assert mask.mean() == 4 / 16


def test_conv_mask_keeps_whole_spatial_kernels(graph):
    mask = kernel_mask(graph, (3, 3, 32, 48), "conv")
    assert (mask == mask[:1, :1]).all()
    assert mask.mean() == 4 / 16
    assert np.array_equal(mask[0, 0], kernel_mask(graph, (32, 48), "dense"))


def test_conv_transpose_mask_uses_out_in_layout(graph):
    mask = kernel_mask(graph, (3, 3, 48, 32), "conv_transpose")
    assert np.array_equal(mask[1, 2], kernel_mask(graph, (32, 48), "dense").T)


def test_self_loops_add_the_diagonal_blocks(graph):
    mask = kernel_mask(graph, (32, 32), "dense", self_loops=True)
    assert mask.mean() == 5 / 16
    assert mask[0, 0] and mask[31, 31]


def test_uneven_channels_report_the_exact_density(graph):
    mask = kernel_mask(graph, (3, 3, 20, 24), "conv")
    sizes_in = np.bincount(channel_groups(20, 16))
    sizes_out = np.bincount(channel_groups(24, 16))
    expected = (sizes_in[:, None] * sizes_out[None, :] * graph.adjacency).sum() / (20 * 24)
    assert mask.mean() == pytest.approx(expected)


@pytest.mark.parametrize(
    "shape, layout, message",
    [((8, 32), "dense", "Cannot split 8 channels"), ((3, 3, 32, 32), "depthwise", "`layout` must be one of"),
     ((32, 32, 3), "dense", "rank 2")],
)
def test_kernel_mask_bad_input(graph, shape, layout, message):
    with pytest.raises(ValueError, match=message):
        kernel_mask(graph, shape, layout)
