"""Figures: the layer plot shows kept shares of prunable layers only, marks skipped ones, grows with the bars."""

import keras
import pytest

pytest.importorskip("matplotlib")

import rgp_keras  # noqa: E402
from rgp_keras.graph import RegularGraph  # noqa: E402
from rgp_keras.plots import plot_adjacency, plot_layer_sparsity  # noqa: E402


def test_layer_plot_linear_percentages_skipped_layers_marked_and_sized_to_bars(tmp_path, vgg_model):
    summary = rgp_keras.pruning_summary(rgp_keras.prune_regular_graph(vgg_model, degree=4, nodes=16, seed=0))
    figure = plot_layer_sparsity(summary, tmp_path / "layers.png")
    axes = figure.axes[0]
    labels = [label.get_text() for label in axes.get_yticklabels()]
    kernels = [row["name"] for row in summary if row["type"] in ("Conv2D", "Dense")]
    assert len(kernels) == 5 and labels == kernels[::-1]  # no BatchNorm, pooling or ReLU rows
    assert axes.get_xscale() == "linear" and axes.get_xlim() == (0, 100)
    texts = [text.get_text() for text in axes.texts]
    assert sorted(t for t in texts if "(graph" in t) == ["25.1%  (graph 16/4)", "25.3%  (graph 16/4)",
                                                        "26.2%  (graph 16/4)"]
    assert "3 input channels: fewer than the graph's 16 nodes" in texts  # skipped layers say why
    assert "10 output channels: fewer than the graph's 16 nodes" in texts
    wide = keras.Sequential([keras.Input((8,)), *[keras.layers.Dense(32) for _ in range(20)]])
    taller = plot_layer_sparsity(rgp_keras.pruning_summary(wide), tmp_path / "wide.png")
    assert taller.get_size_inches()[1] > figure.get_size_inches()[1] + 4
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_adjacency_plot_has_a_legend(tmp_path):
    figure = plot_adjacency(RegularGraph.ring_lattice(16, 4), tmp_path / "a.png")
    legend = figure.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["kept: input group -> output group", "pruned"]
