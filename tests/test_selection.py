"""nodes="auto", requested vs delivered sparsity, and the warning when narrow layers stay dense."""

import warnings

import keras
import pytest

import rgp_keras
from rgp_keras.graph import RegularGraph, exact_nodes
from rgp_keras.masking.selection import auto_nodes

L = keras.layers


def narrow_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((32, 32, 3)), L.Conv2D(16, 3, padding="same"), L.Conv2D(32, 3, padding="same"),
        L.Conv2D(64, 3, padding="same"), L.Conv2D(64, 3, padding="same"), L.GlobalAveragePooling2D(), L.Dense(10),
    ])


def wide_mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((64,)), *[L.Dense(512, activation="relu") for _ in range(3)], L.Dense(10)])


def test_auto_nodes_gives_the_density_exactly_with_the_widest_groups():
    mlp = wide_mlp()
    hidden = mlp.layers[1:3]
    assert auto_nodes(hidden, 0.875) == (32, 4)  # 512 / 32 = 16-channel groups
    assert auto_nodes(hidden, 0.75) == (32, 8)
    assert auto_nodes(hidden, 0.5, self_loops=True) == (32, 15)  # (15 + 1) / 32
    assert auto_nodes(hidden, 0.9) == (30, 3)  # 3 / 30 exactly, groups >= 17 channels
    assert auto_nodes(hidden, 0.87) == (32, 4)  # no n <= 64 gives 0.13 exactly: nearest degree
    cnn = narrow_cnn()
    assert auto_nodes(cnn.layers[1:4], 0.875) == (16, 2)  # 32-channel layer: 2-channel groups
    assert exact_nodes(1 / 8, 15) is None and exact_nodes(1 / 8, 64) == 64


def test_default_nodes_auto_delivers_the_requested_sparsity_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "Sparsity .* is estimated to run at")  # speed, not sparsity: see below
        pruned = rgp_keras.prune_regular_graph(narrow_cnn(), sparsity=0.875, seed=0)
    summary = rgp_keras.pruning_summary(pruned)
    assert summary.graph.nodes == 16 and summary.kernel_sparsity == 0.875
    assert summary.totals["mac_reduction"] > 0.85
    assert "graph 16/2: 87.5% of each masked kernel pruned; model: 85.7% of parameters, 86.9% of MACs" in str(summary)


def test_the_summary_estimates_the_latency_and_a_sparsity_no_faster_than_a_lower_one_warns():
    model = keras.Sequential([
        keras.Input((16, 16, 3)), L.Conv2D(64, 3), L.Conv2D(128, 3), L.Conv2D(128, 3), L.GlobalAveragePooling2D(),
        L.Dense(10),
    ])
    dense = rgp_keras.pruning_summary(model)
    assert dense.estimated_latency == 1.0 and "estimated LiteRT latency" not in str(dense)
    estimates = {}
    for sparsity in (0.75, 0.875):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # 8/2 and 16/2 leave groups of 8 and 4 channels: each faster than before
            summary = rgp_keras.pruning_summary(rgp_keras.prune_regular_graph(model, sparsity=sparsity, seed=0))
        estimates[sparsity] = summary.estimated_latency
        assert f"estimated LiteRT latency {summary.estimated_latency:.2f}x the dense file's" in str(summary)
    assert 0.2 < estimates[0.875] < estimates[0.75] < 1 - 0.75 + 0.1
    with pytest.warns(UserWarning, match=r"Sparsity 0.9375 \(graph 32/2\) is estimated to run at 0.2\dx the dense "
                                         r"file's latency, no faster than 0.875 would \(graph 16/2: 0.23x\): channel "
                                         r"groups of 2 channel\(s\) are too narrow.*prune_for_latency"):
        rgp_keras.prune_regular_graph(model, sparsity=0.9375, seed=0)
    thin = rgp_keras.pruning_summary(rgp_keras.prune_channels(model, keep=0.5))  # plain layers: their MACs
    assert thin.estimated_latency == pytest.approx(thin.totals["computed_macs"] / thin.totals["macs"])


def test_narrow_layers_left_dense_warn_with_the_numbers_and_the_nodes_that_fit():
    # MobileNet-like: the narrow layers work at high resolution and hold most of the MACs.
    model = keras.Sequential([
        keras.Input((32, 32, 3)), L.Conv2D(32, 3, padding="same", name="stem"),
        L.Conv2D(32, 3, padding="same", name="narrow"), L.MaxPooling2D(4),
        L.Conv2D(128, 3, padding="same", name="widen"), L.Conv2D(128, 3, padding="same", name="wide"),
        L.GlobalAveragePooling2D(), L.Dense(10),
    ])
    with pytest.warns(UserWarning) as record:
        pruned = rgp_keras.prune_regular_graph(model, sparsity=0.875, nodes=64, seed=0)
    totals = rgp_keras.pruning_summary(pruned).totals
    message = str(record[0].message)
    assert (f"Asked for 87.5% sparsity (graph 64/8), delivered {100 * totals['sparsity']:.1f}% of the parameters "
            f"and {100 * totals['mac_reduction']:.1f}% of the MACs: 2 layer(s) holding 53% of the MACs") in message
    assert "narrow (32 channels), widen (32 channels)" in message and "stem" not in message  # 3 channels: no graph fits
    assert "nodes=32 would prune them at the same density; nodes='auto'" in message


def test_nodes_bad_values_and_conflicts_say_what_is_accepted():
    model = narrow_cnn()
    with pytest.raises(ValueError, match="`nodes` must be an integer >= 3 or 'auto', got 'many'"):
        rgp_keras.prune_regular_graph(model, sparsity=0.875, nodes="many")
    with pytest.raises(ValueError, match="`nodes`=32 conflicts with `graph`"):
        rgp_keras.prune_regular_graph(model, graph=RegularGraph.random(16, 2, seed=0), nodes=32)
    with pytest.raises(ValueError, match="skip_first/skip_last keep dense"):
        rgp_keras.prune_regular_graph(keras.Sequential([keras.Input((8,)), L.Dense(64), L.Dense(4)]), degree=2,
                                      nodes=8)
