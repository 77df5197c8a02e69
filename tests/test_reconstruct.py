"""Tests for rgp_keras.data_aware.reconstruct: conv features, least-squares refit, BatchNorm statistics, reports."""

import warnings

import keras
import numpy as np
import pytest

from rgp_keras import prune_regular_graph, pruning_summary
from rgp_keras.data_aware.reconstruct import kernel_rows
from rgp_keras.graph import RegularGraph
from rgp_keras.model_walk import to_numpy


@pytest.mark.parametrize(
    "layer, shape",
    [
        (keras.layers.Conv2D(5, 3, padding="same"), (2, 7, 6, 4)),
        (keras.layers.Conv2D(5, (3, 2), strides=2, padding="valid"), (2, 9, 8, 4)),
        (keras.layers.Conv2D(5, 3, dilation_rate=2, padding="same"), (2, 9, 9, 4)),
        (keras.layers.Conv2D(5, 4, strides=2, padding="same"), (2, 8, 7, 4)),  # odd padding: one more after
        (keras.layers.Conv2D(5, 3, strides=(1, 3), dilation_rate=1, padding="same"), (2, 6, 10, 4)),
        (keras.layers.Conv2D(5, 2, dilation_rate=3, padding="valid"), (2, 9, 8, 4)),
        (keras.layers.Conv1D(5, 3, strides=2, padding="same"), (2, 11, 4)),
        (keras.layers.Conv1D(5, 3, dilation_rate=2, padding="valid"), (2, 11, 4)),
        (keras.layers.Dense(5), (2, 3, 4)),
    ],
)
def test_features_times_the_kernel_equal_the_layer_output(layer, shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = to_numpy(layer(x))
    kernel, bias = layer.get_weights()
    got = kernel_rows(layer, x) @ kernel.reshape(-1, kernel.shape[-1]) + bias
    np.testing.assert_allclose(got, y.reshape(-1, y.shape[-1]), atol=1e-5)


def teacher(seed=0):
    """A trained-looking dense model: random weights, but wide hidden layers and a BatchNorm."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(32, activation="relu"),
            layers.Dense(3),
        ]
    )


def output_error(model, pruned, x):
    want = to_numpy(model(x))
    return float(np.mean((to_numpy(pruned(x)) - want) ** 2) / np.mean(want**2))


def test_reconstruction_brings_the_pruned_outputs_close_to_the_dense_ones():
    model = teacher()
    rng = np.random.default_rng(0)
    calibration, held_out = rng.normal(size=(256, 8, 8, 4)), rng.normal(size=(64, 8, 8, 4)).astype("float32")
    graph = RegularGraph.random(16, 4, seed=0)
    before = [w.copy() for w in model.get_weights()]
    plain = prune_regular_graph(model, graph=graph, assign_channels=False)
    refit = prune_regular_graph(model, graph=graph, assign_channels=False, calibration_data=calibration)
    both = prune_regular_graph(model, graph=graph, calibration_data=calibration)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    errors = [output_error(model, p, held_out) for p in (plain, refit, both)]
    assert errors[1] < 0.5 * errors[0] and errors[2] < 0.5 * errors[0], errors
    for layer in refit.layers:
        if hasattr(layer, "mask"):
            kernel, mask = layer.kernel.numpy(), layer.mask.numpy()
            assert np.all(kernel[mask == 0] == 0.0) and np.any(kernel[mask == 1] != 0)
            assert layer.data_aware["error_after"] < layer.data_aware["error_before"]


def test_batchnorm_downstream_maps_the_pruned_statistics_onto_the_dense_ones():
    model = teacher()
    calibration = np.random.default_rng(0).normal(size=(128, 8, 8, 4)).astype("float32")
    bn_index = next(i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.BatchNormalization))
    tap = lambda m, x: to_numpy(keras.Model(m.inputs[0], m.layers[bn_index].output)(x))
    # untrained: moving statistics unlike the data; the pruned BatchNorm output keeps the dense one's distribution
    pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0, calibration_data=calibration, assign_channels=False)
    dense_out, pruned_out = tap(model, calibration), tap(pruned, calibration)
    np.testing.assert_allclose(pruned_out.mean(axis=(0, 1, 2)), dense_out.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(pruned_out.std(axis=(0, 1, 2)), dense_out.std(axis=(0, 1, 2)), rtol=1e-3)
    # trained-like: moving statistics equal to the data's; the pruned model gets its own calibration statistics
    bn = model.layers[bn_index]
    inputs = to_numpy(keras.Model(model.inputs[0], bn.input)(calibration))
    bn.moving_mean.assign(inputs.mean(axis=(0, 1, 2)))
    bn.moving_variance.assign(inputs.var(axis=(0, 1, 2)))
    pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0, calibration_data=calibration)
    inputs = to_numpy(keras.Model(pruned.inputs[0], pruned.layers[bn_index].input)(calibration))
    np.testing.assert_allclose(pruned.layers[bn_index].moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(pruned.layers[bn_index].moving_variance.numpy(), inputs.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=bn.epsilon)  # equal up to BatchNorm's epsilon


def test_the_classifier_downstream_is_refit_and_reported():
    model = teacher()
    calibration = np.random.default_rng(0).normal(size=(128, 8, 8, 4))
    pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0, calibration_data=calibration)
    summary = pruning_summary(pruned)
    last = summary[-1]
    assert last["graph"] == "" and "error_after" in last["data_aware"]
    assert summary[0]["data_aware"] == {}  # the first conv reads the unchanged input: left alone
    text = str(summary)
    assert "data-aware pruning" in text and "output error" in text and "importance kept" in text


def test_few_samples_warn_and_still_fit():
    model = teacher()
    with pytest.warns(UserWarning, match="fewer rows than weights to fit in .* pass more calibration samples"):
        pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0,
                                     calibration_data=np.ones((1, 8, 8, 4)) * np.arange(4))
    assert all(np.all(np.isfinite(w)) for w in pruned.get_weights())


def test_layers_reconstruction_cannot_refit_are_named():
    model = keras.Sequential([keras.Input((6, 6, 6, 2)), keras.layers.Conv3D(16, 3, padding="same"),
                              keras.layers.Conv3D(16, 3, padding="same"), keras.layers.Conv3D(16, 3, padding="same"),
                              keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = prune_regular_graph(model, degree=2, nodes=16, seed=0,
                                     calibration_data=np.random.default_rng(0).normal(size=(8, 6, 6, 6, 2)))
    row = next(row for row in pruning_summary(pruned) if row["graph"])
    assert row["data_aware"]["reconstruction"].startswith("not refit: Conv3D")


def test_data_aware_pruning_is_deterministic():
    model = teacher()
    calibration = np.random.default_rng(0).normal(size=(64, 8, 8, 4))
    first, second = (prune_regular_graph(model, degree=4, nodes=16, seed=0, calibration_data=calibration)
                     for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))


def test_layers_inside_a_nested_model_are_masked_and_the_summary_says_they_were_not_refit():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu")], name="block")
    inputs = keras.Input((16,))
    x = keras.layers.Dense(32, activation="relu")(inputs)
    x = keras.layers.Dense(32, activation="relu")(block(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    pruned = prune_regular_graph(model, degree=4, nodes=16, seed=0,
                                 calibration_data=np.random.default_rng(0).normal(size=(256, 16)))
    rows = {row["name"]: row for row in pruning_summary(pruned)}
    inner = [rows[layer.name] for layer in block.layers]
    assert all(row["graph"] == "16/4" for row in inner)
    assert all(row["data_aware"]["reconstruction"] == "not refit: inside nested model 'block'" for row in inner)
    assert all(row["data_aware"]["kept_order"] == "inside a nested model" for row in inner)
    assert "error_after" in rows[model.layers[3].name]["data_aware"]  # the Dense after the block is refit


def test_graph_candidates_keep_the_graph_that_reproduces_the_dense_outputs_best():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4)])
    calibration = np.random.default_rng(0).normal(size=(200, 32)).astype("float32")
    options = dict(degree=4, nodes=32, calibration_data=calibration)
    singles = [prune_regular_graph(model, seed=seed, **options) for seed in (5, 6, 7)]
    best = prune_regular_graph(model, seed=5, graph_candidates=3, **options)
    want = to_numpy(model(calibration))
    errors = [float(np.sum((to_numpy(p(calibration)) - want) ** 2) / np.sum(want**2)) for p in singles]
    chosen = int(np.argmin(errors))
    assert all(np.array_equal(a, b) for a, b in zip(best.get_weights(), singles[chosen].get_weights()))
    text = str(pruning_summary(best))
    assert f"graph {chosen + 1} of 3 candidates: output error on the calibration samples" in text
    assert ", ".join(f"{e:.4f}" for e in errors) in text


@pytest.mark.parametrize(
    "options, error, words",
    [
        (dict(graph_candidates=0), ValueError, "`graph_candidates` must be an integer >= 1, got 0"),
        (dict(graph_candidates=2.0), TypeError, "`graph_candidates` must be an integer, got 2.0"),
        (dict(graph_candidates=2), ValueError, "`graph_candidates` needs `calibration_data`"),
        (dict(graph_candidates=2, calibration_data=np.ones((8, 8, 8, 4)), graph=RegularGraph.random(16, 4, seed=0),
              degree=None), ValueError, "an explicit `graph` leaves nothing to pick"),
    ],
)
def test_bad_graph_candidates_say_what_is_accepted(options, error, words):
    model = teacher()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        prune_regular_graph(model, **{"degree": 4, "nodes": "auto", **options})
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_auto_mixes_only_where_a_masked_layer_is_short_of_rows():
    convolutions = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            *(keras.layers.Conv2D(32, 3, padding="same") for _ in range(3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    conv = prune_regular_graph(
        convolutions, degree=4, nodes=16, seed=0, calibration_data=np.random.default_rng(0).normal(size=(64, 8, 8, 4))
    )
    # 64 samples x 64 positions over 3 x 3 x 32 x 4 / 16 + 1 = 73 weights: 56 rows per weight
    assert "64 samples + 0 mixes of pairs (no mixes: every masked layer's fit has >= 32 rows" in str(
        pruning_summary(conv)
    )
    dense = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64),
            keras.layers.Dense(64),
            keras.layers.Dense(64),
            keras.layers.Dense(2),
        ]
    )
    pruned = prune_regular_graph(
        dense, degree=4, nodes=16, seed=0, calibration_data=np.random.default_rng(0).normal(size=(64, 16))
    )
    assert "64 samples + 448 mixes of pairs" in str(pruning_summary(pruned))  # 64 rows for 17 weights: 3.8


def test_mixes_reach_only_the_fits_short_of_rows():
    calibration = np.random.default_rng(0).normal(size=(64, 8, 8, 4)).astype("float32")
    mixed = prune_regular_graph(teacher(), degree=4, nodes=16, seed=0, calibration_data=calibration)
    plain = prune_regular_graph(
        teacher(), degree=4, nodes=16, seed=0, calibration_data=calibration, calibration_mixes=0
    )
    assert "64 samples + 448 mixes of pairs" in str(pruning_summary(mixed))  # the masked Dense: 1 row per sample
    kernels = lambda model: [
        (type(layer.layer).__name__, to_numpy(layer.layer.kernel)) for layer in model.layers if hasattr(layer, "mask")
    ]
    for (kind, a), (_, b) in zip(kernels(mixed), kernels(plain)):
        if kind == "Conv2D":  # 64 positions a sample: 56 rows per weight, the samples alone
            np.testing.assert_array_equal(a, b)
        else:
            assert not np.array_equal(a, b)


def test_the_result_does_not_depend_on_batches_disk_or_the_form_of_the_data(monkeypatch):
    from rgp_keras.data_aware import stream

    model = teacher()
    x = np.random.default_rng(0).normal(size=(96, 8, 8, 4)).astype("float32")
    prune = lambda data, **options: prune_regular_graph(model, degree=4, nodes=16, seed=0, calibration_data=data,
                                                        **options)
    whole = prune(x, calibration_batch_size=96)  # the masked Dense is short of rows: 672 mixes follow
    assert "96 samples + 672 mixes" in str(pruning_summary(whole))
    batched = prune(x, calibration_batch_size=7)
    monkeypatch.setattr(stream, "OBSERVED_BYTES", 0)  # every observer in a pass of its own
    cut = prune(x, calibration_batch_size=7)
    monkeypatch.setattr(stream, "MEMORY_BYTES", 0)  # every stored batch on disk
    spilled = prune((x[i : i + 10] for i in range(0, 96, 10)), calibration_batch_size=5)
    held_out = np.random.default_rng(1).normal(size=(64, 8, 8, 4)).astype("float32")
    want = to_numpy(whole(held_out))
    for other in (batched, cut, spilled):  # equal up to summation order (and the order of equally important channels)
        np.testing.assert_allclose(to_numpy(other(held_out)), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _groups(kept):
    """(kept inputs, columns) per output group of a kept-weights matrix (features x outputs)."""
    columns_of = {}
    for column in range(kept.shape[1]):
        columns_of.setdefault(kept[:, column].tobytes(), []).append(column)
    return [(np.flatnonzero(kept[:, c[0]]), np.array(c)) for c in columns_of.values()]


def test_each_output_group_sums_what_the_full_normal_equations_give_it(monkeypatch):
    from rgp_keras.data_aware import reconstruct

    rng = np.random.default_rng(0)
    window, channels, outputs = 9, 8, 8  # a 3x3 convolution, 4 groups of 2 channels, each reading one group
    graph = np.eye(4, dtype=bool)[[1, 2, 3, 0]]  # output group g reads input group g + 1
    kept = np.tile(np.repeat(np.repeat(graph, 2, axis=0), 2, axis=1), (window, 1))
    rows, target = rng.normal(size=(50, window * channels)), rng.normal(size=(50, outputs))
    groups = _groups(kept)
    by_group = reconstruct._Sums(groups, window * channels, outputs, window)
    uneven = kept.copy()
    uneven[:channels] = False  # the first window position keeps nothing: kept channels differ by position
    assert reconstruct._Sums(_groups(uneven), window * channels, outputs, window).shared
    monkeypatch.setattr(reconstruct, "_GROUP_SHARE", 0.0)  # one full X^T X (72 features: _GROUP_SHARE_WIDE not used)
    full = reconstruct._Sums(groups, window * channels, outputs, window)
    assert not by_group.shared and full.shared
    for sums in (by_group, full):
        sums.add(rows[:30].astype("float32"), target[:30].astype("float32"))
        sums.add(rows[30:].astype("float32"), target[30:].astype("float32"))
    for index, (inputs, columns) in enumerate(groups):
        mine, want = by_group.group(index), full.group(index)
        x = np.concatenate([rows[:, inputs], np.ones((50, 1))], axis=1)
        np.testing.assert_allclose(mine.gram, x.T @ x, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(mine.cross, x.T @ target[:, columns], rtol=1e-5, atol=1e-4)
        for name in ("gram", "cross", "energy"):
            np.testing.assert_allclose(getattr(mine, name), getattr(want, name), rtol=1e-5, atol=1e-4)
        assert mine.rows == want.rows == 50


@pytest.mark.parametrize("verbose, shown", [(1, True), (0, False), ("auto", False)])  # 4 masked layers: "auto" quiet
def test_verbose_shows_a_progress_bar_or_nothing(verbose, shown, capsys):
    prune_regular_graph(teacher(), degree=4, nodes=16, seed=0, verbose=verbose,
                        calibration_data=np.random.default_rng(0).normal(size=(32, 8, 8, 4)))
    printed = capsys.readouterr().out
    assert ("/layer" in printed) if shown else printed == ""


def test_bad_verbose_says_what_is_accepted():
    with pytest.raises(ValueError, match=r'`verbose` must be "auto" .*, 0 or 1, got 2'):
        prune_regular_graph(teacher(), degree=4, nodes=16, verbose=2)


@pytest.mark.parametrize("first", range(6))
def test_the_ridge_walk_ends_where_trying_every_ridge_does(first, monkeypatch):
    from rgp_keras.data_aware import reconstruct

    rng = np.random.default_rng(first)
    features, outputs = 40, 3
    weights = rng.normal(size=(features + 1, outputs))
    fit, held_out = reconstruct._Normal(features, outputs), reconstruct._Normal(features, outputs)
    for sums, rows in ((fit, 60), (held_out, 200)):  # few rows per feature: the held-out error has a valley
        x = rng.normal(size=(rows, features))
        y = np.concatenate([x, np.ones((rows, 1))], axis=1) @ weights + rng.normal(size=(rows, outputs))
        sums.add(x.astype("float32"), y.astype("float32"))
    inputs, columns, start = np.arange(features + 1), np.arange(outputs), np.zeros((features + 1, outputs))
    error = held_out.errors(inputs, columns)
    every = [error(reconstruct._ridge_solve(fit, inputs, columns, ridge, start)) for ridge in reconstruct._RIDGE]
    assert 0 < np.argmin(every) < len(every) - 1  # a valley inside the range
    solves, solve = [], reconstruct._solve
    monkeypatch.setattr(reconstruct, "_solve", lambda *arguments: solves.append(1) or solve(*arguments))
    best_error, best = reconstruct._best_ridge(fit, inputs, columns, start, error, first)
    assert best == np.argmin(every) and best_error == pytest.approx(min(every))
    assert len(solves) <= abs(first - best) + 3  # the start, down the valley, one step past it on each side


def test_the_engine_runs_numpy_and_scipy_blas_on_one_thread():
    from threadpoolctl import threadpool_info

    from rgp_keras.data_aware import stream
    from rgp_keras.data_aware.calibration import Calibration
    from rgp_keras.model_walk import layer_calls

    seen = []

    class Threads(stream.Observer):
        changes = False

        def add(self, start, inputs, reference_inputs, reference_outputs):
            seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")

        def finish(self):
            pass

    model = teacher()
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 4)).astype("float32")
    before = [pool["num_threads"] for pool in threadpool_info()]
    stream.walk(layer_calls(model), None, Calibration(x, [(None, 8, 8, 4)], ["x"], batch_size=4),
                lambda call, reference_call, changed: Threads() if call.layer is model.layers[-1] else None)
    assert seen and set(seen) == {1}
    assert [pool["num_threads"] for pool in threadpool_info()] == before  # the user's settings come back


def inverted_residual(seed=0, blocks=2):
    """An inverted-residual net (MobileNetV2's blocks: expand, depthwise, project + BatchNorm, Add), trained-like
    BatchNorm statistics."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((10, 10, 3))
    x = layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs))
    for _ in range(blocks):
        y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(48, 1, use_bias=False)(x)))
        y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)))
        x = layers.Add()([x, layers.BatchNormalization()(layers.Conv2D(16, 1, use_bias=False)(y))])
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(x)))
    calibration = np.random.default_rng(seed).normal(size=(160, 10, 10, 3)).astype("float32")
    for layer in model.layers:  # moving statistics of the data, as training leaves them
        if isinstance(layer, layers.BatchNormalization):
            inputs = to_numpy(keras.Model(model.inputs[0], layer.input)(calibration))
            layer.moving_mean.assign(inputs.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(inputs.var(axis=(0, 1, 2)))
    return model, calibration


def test_depthwise_layers_downstream_of_thinned_channels_are_refit_channel_by_channel():
    from rgp_keras import prune_channels

    model, calibration = inverted_residual()
    thin = prune_channels(model, keep=0.5, calibration_data=calibration, calibration_mixes=0)
    rows = [row for row in pruning_summary(thin) if row["type"] == "DepthwiseConv2D"]
    assert len(rows) == 2
    for row in rows:
        assert row["data_aware"]["error_after"] < 0.9 * row["data_aware"]["error_before"], row


def test_a_branch_ending_in_a_residual_sum_is_fit_to_the_dense_sum(monkeypatch):
    from rgp_keras import prune_channels
    from rgp_keras.channels import prune
    from rgp_keras.data_aware import reconstruct

    # the stream's channels as they are (not turned to another basis), so that the kept ones can be named
    monkeypatch.setattr(prune, "principal_basis", lambda model, spaces, roots, calibration: (model, []))
    model, calibration = inverted_residual()
    last_sum = [index for index, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Add)][-1]
    tap = lambda m: to_numpy(keras.Model(m.inputs[0], m.layers[last_sum].output)(calibration))

    def sum_error(thin):
        """Relative error of the last residual sum's kept channels (the first conv, which reads the unchanged
        input and so is not refit, names them: its kernel is the dense one's kept columns)."""
        dense_kernel, thin_kernel = (to_numpy(m.layers[1].kernel).reshape(-1, m.layers[1].filters)
                                     for m in (model, thin))
        kept = [int(np.argmin(np.abs(dense_kernel - column[:, None]).sum(axis=0))) for column in thin_kernel.T]
        want, got = tap(model)[..., kept], tap(thin)
        return float(np.mean((got - want) ** 2) / np.mean(want**2))

    aware = prune_channels(model, keep=0.5, calibration_data=calibration, calibration_mixes=0)
    monkeypatch.setattr(reconstruct, "residual_branches", lambda calls: {})
    plain = prune_channels(model, keep=0.5, calibration_data=calibration, calibration_mixes=0)
    assert sum_error(aware) < 0.85 * sum_error(plain), (sum_error(aware), sum_error(plain))
    # the projection's BatchNorm keeps the statistics the fit counted on: the dense ones of its kept channels
    norms = [[layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)][-1]
             for m in (model, aware)]
    dense_mean, kept_mean = (to_numpy(norm.moving_mean) for norm in norms)
    assert all(np.isclose(dense_mean, value, rtol=0, atol=0).any() for value in kept_mean)


def test_residual_branches_are_found_only_where_nothing_else_reads_them():
    from rgp_keras.data_aware.reconstruct import residual_branches
    from rgp_keras.model_walk import layer_calls

    layers = keras.layers
    inputs = keras.Input((8,))
    a = layers.Dense(8, name="a")(inputs)
    direct = layers.Add(name="sum1")([a, layers.Dense(8, name="direct")(a)])  # Dense -> Add
    normed = layers.BatchNormalization(name="norm")(layers.Dense(8, name="normed")(direct))
    through = layers.Add(name="sum2")([direct, normed])  # Dense -> BatchNorm -> Add
    shared = layers.Dense(8, name="shared")(through)
    product = layers.Multiply(name="product")([shared, layers.Dense(8, name="multiplied")(through)])  # no sum
    model = keras.Model(inputs, layers.Add(name="sum3")([product, shared]))  # `shared` is read twice
    calls = layer_calls(model)
    writer = {key: call.layer.name for call in calls.calls for key in call.outputs}
    found = {writer[key]: (writer[residual.skip], getattr(residual.normalisation, "name", None))
             for key, residual in residual_branches(calls).items()}
    assert found == {"direct": ("a", None), "normed": ("sum1", "norm"), "product": ("shared", None)}
