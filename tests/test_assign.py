"""Tests for rgp_keras.data_aware.assign: channel permutations keep the dense model's function and raise the kept
importance."""

import keras
import numpy as np
import pytest

from rgp_keras import prune_regular_graph
from rgp_keras.data_aware.assign import assign_channels
from rgp_keras.graph import RegularGraph
from rgp_keras.masking.selection import select
from rgp_keras.model_walk import leaves, to_numpy
from rgp_keras.prune import with_weights


def randomise_batchnorm(model, seed=0):
    """Distinct BatchNorm parameters and statistics, so that a wrong permutation of them shows."""
    rng = np.random.default_rng(seed)
    for layer in leaves(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype("float32")
                    if i in (0, 3)
                    else rng.normal(size=w.shape).astype("float32")
                    for i, w in enumerate(layer.get_weights())
                ]
            )


def assigned(model, graph):
    selected = select(model, graph, None, True, True)
    weights, report = assign_channels(model, graph, selected)
    return with_weights(model, weights), weights, report


def assert_same_function(model, other, shape, tolerance=1e-5):
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    for got, want in zip(keras.tree.flatten(other(x)), keras.tree.flatten(model(x))):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=tolerance)


def branchy_model():
    """Residual Adds, a Concatenate, BatchNorm, a depthwise conv and a second output."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(32, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    y = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same")(y)
    y = layers.Conv2D(32, 1)(y)
    x = layers.Add()([x, y])
    a = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    b = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Concatenate()([a, b])
    x = layers.Conv2D(64, 3, padding="same")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    pooled = layers.GlobalAveragePooling2D()(x)
    hidden = layers.Dense(64, activation="relu")(pooled)
    return keras.Model(inputs, [layers.Dense(10)(hidden), layers.Dense(1, name="aux")(pooled)])


def test_assignment_keeps_the_function_of_a_model_with_adds_concatenate_and_batchnorm():
    model = branchy_model()
    randomise_batchnorm(model)
    graph = RegularGraph.random(16, 2, seed=0)
    permuted, weights, report = assigned(model, graph)
    assert weights, "no channel space was permuted"
    assert_same_function(model, permuted, (12, 12, 3))
    assert all(r["importance_after"] >= r["importance_before"] - 1e-12 for r in report.values())
    assert sum(r["importance_after"] for r in report.values()) > sum(r["importance_before"] for r in report.values())
    reasons = " ".join(r["kept_order"] for r in report.values())
    assert "Concatenate" in reasons


def test_assignment_is_deterministic_and_leaves_the_model_untouched(vgg_model):
    graph = RegularGraph.random(16, 4, seed=0)
    before = [w.copy() for w in vgg_model.get_weights()]
    first, second = (assign_channels(vgg_model, graph, select(vgg_model, graph, None, True, True))[0] for _ in range(2))
    assert first.keys() == second.keys()
    for key in first:
        assert all(np.array_equal(a, b) for a, b in zip(first[key], second[key]))
    assert all(np.array_equal(a, b) for a, b in zip(before, vgg_model.get_weights()))


def test_a_flatten_boundary_keeps_channel_order_and_says_why():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 16)),
            keras.layers.Conv2D(32, 3, padding="same"),
            keras.layers.Conv2D(32, 3, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(32),
            keras.layers.Dense(4),
        ]
    )
    pruned = prune_regular_graph(model, degree=2, nodes=16, seed=0)
    notes = {
        layer.layer.name: layer.data_aware["kept_order"] for layer in pruned.layers if hasattr(layer, "data_aware")
    }
    assert "Flatten" in notes[model.layers[1].name] and "Flatten" in notes[model.layers[3].name]


def test_pruning_with_assignment_keeps_the_permuted_trained_weights(mlp_model):
    graph = RegularGraph.random(16, 2, seed=0)
    plain = prune_regular_graph(mlp_model, graph=graph, assign_channels=False)
    aware = prune_regular_graph(mlp_model, graph=graph)
    energy = lambda model: sum(
        float(np.sum(np.square(layer.layer.get_weights()[0]))) for layer in model.layers if hasattr(layer, "mask")
    )
    assert energy(aware) > energy(plain)
    # the kept weights are the dense ones moved, not new values
    dense_values = np.sort(np.abs(mlp_model.layers[1].get_weights()[0]).ravel())
    kept = np.abs(aware.layers[1].layer.get_weights()[0])
    assert np.all(np.isin(kept[kept > 0], dense_values))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2", "DenseNet121"])
def test_assignment_keeps_the_function_of_keras_applications(name):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
    randomise_batchnorm(model)
    permuted, weights, report = assigned(model, RegularGraph.random(16, 4, seed=0))
    assert weights
    assert sum(r["importance_after"] for r in report.values()) > sum(r["importance_before"] for r in report.values())
    assert_same_function(model, permuted, (64, 64, 3), tolerance=1e-5 * _output_scale(model))


def _output_scale(model):
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    return max(1.0, float(np.max(np.abs(to_numpy(model(x))))))


def test_a_backend_op_with_a_per_channel_constant_keeps_channel_order():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    x = keras.ops.add(x, np.arange(32, dtype="float32"))  # a constant the permutation cannot reach
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    permuted, _, report = assigned(model, RegularGraph.random(16, 2, seed=0))
    assert_same_function(model, permuted, (8, 8, 3))
    assert any("Add" in r["kept_order"] for r in report.values())


@pytest.mark.parametrize("channels, groups", [(10, 4), (37, 5), (256, 8), (96, 16)])
def test_best_groups_reaches_the_linear_assignment_optimum(channels, groups):
    """The transportation solver fills each group to its size and keeps as much score as the c x c linear
    assignment (each group's column repeated per slot) does, with and without ties."""
    from scipy.optimize import linear_sum_assignment

    from rgp_keras.data_aware._transport import best_groups
    from rgp_keras.masking.masks import channel_groups

    rng = np.random.default_rng(channels)
    base = channel_groups(channels, groups)
    sizes = np.bincount(base, minlength=groups)
    for score in (rng.random((channels, groups)) ** 3 * rng.random((channels, 1)),
                  np.round(rng.random((channels, groups)), 1)):
        group = best_groups(score, sizes)
        np.testing.assert_array_equal(np.bincount(group, minlength=groups), sizes)
        rows, columns = linear_sum_assignment(score[:, base], maximize=True)
        best = score[rows, base[columns]].sum()
        assert score[np.arange(channels), group].sum() == pytest.approx(best, rel=1e-12)


def test_a_failed_transportation_solve_falls_back_to_linear_assignment(monkeypatch):
    import rgp_keras.data_aware.assign as assign
    from rgp_keras.masking.masks import channel_groups

    score = np.random.default_rng(0).random((24, 4))
    base = channel_groups(24, 4)
    solved = assign._groups(score, base, 4)

    def fails(score, sizes):
        raise RuntimeError("best_groups: a cycle in the shortest-path tree")

    monkeypatch.setattr(assign, "best_groups", fails)
    fallback = assign._groups(score, base, 4)
    np.testing.assert_array_equal(np.bincount(fallback), np.bincount(base))
    assert score[np.arange(24), fallback].sum() == pytest.approx(score[np.arange(24), solved].sum())
