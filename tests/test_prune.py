"""Tests for the Keras 3 pruning API: prune_regular_graph, RegularGraphPruning, strip_pruning,
reinitialize, pruning_summary."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import rgp_keras
from rgp_keras import RegularGraphPruning, prune_regular_graph, pruning_summary, reinitialize, strip_pruning
from rgp_keras.graph import RegularGraph
from rgp_keras.masking.masks import channel_blocks
from rgp_keras.model_walk import leaves, to_numpy


@pytest.fixture(scope="module")
def graph16():
    return RegularGraph.random(16, 4, seed=0)


def wrappers(model):
    """Every RGP wrapper of `model`, nested models included."""
    return [layer for layer in leaves(model) if isinstance(layer, RegularGraphPruning)]


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def masked_entries_are_zero(model):
    for wrapper in wrappers(model):
        kernel = to_numpy(wrapper.kernel)
        mask = to_numpy(wrapper.mask)
        if np.any(kernel[mask == 0] != 0):
            return False
    return True


def stripped_masked_entries_are_zero(pruned, stripped):
    """The stripped kernels are zero exactly where the masks are, and those zeros are the graph's blocks."""
    found = {layer.name: layer for layer in leaves(stripped)}
    assert wrappers(pruned)
    for wrapper in wrappers(pruned):
        kernel = found[wrapper.layer.name].get_weights()[0]
        mask = to_numpy(wrapper.mask)
        assert np.all(kernel[mask == 0] == 0.0) and np.all(kernel[mask == 1] != 0)
        blocks = channel_blocks(kernel)  # contiguous channel groups, one block per kept graph edge
        assert blocks is not None and blocks.shape == (wrapper.graph.nodes,) * 2
        np.testing.assert_array_equal(blocks, wrapper.graph.adjacency | (np.eye(wrapper.graph.nodes, dtype=bool)
                                                                         if wrapper.self_loops else False))


def test_prune_wraps_middle_layers_copies_weights_and_leaves_the_original_alone(mlp_model, graph16):
    before = weights_of(mlp_model)
    pruned = prune_regular_graph(mlp_model, graph=graph16, assign_channels=False)
    names = [type(layer).__name__ for layer in pruned.layers]
    assert names == ["Dense", "RegularGraphPruning", "RegularGraphPruning", "Dense"]
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(mlp_model)))
    for wrapper in wrappers(pruned):
        original = mlp_model.get_layer(wrapper.layer.name).get_weights()
        mask = to_numpy(wrapper.mask)
        assert float(mask.mean()) == 4 / 16
        np.testing.assert_array_equal(wrapper.layer.get_weights()[0], original[0] * mask)
        np.testing.assert_array_equal(wrapper.layer.get_weights()[1], original[1])
    x = np.random.default_rng(0).normal(size=(8, 64)).astype("float32")
    # reference forward pass with kernel * mask computed by hand
    h = x
    for layer in pruned.layers:
        inner = layer.layer if isinstance(layer, RegularGraphPruning) else layer
        kernel, bias = inner.get_weights()
        h = h @ kernel + bias
        if inner.activation is keras.activations.relu:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), h, atol=1e-4)


def test_strip_gives_original_classes_names_and_equal_outputs(vgg_model, graph16):
    pruned = prune_regular_graph(vgg_model, graph=graph16)
    stripped = strip_pruning(pruned)
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in vgg_model.layers]
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in vgg_model.layers]
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    assert np.abs(stripped.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-5
    stripped_masked_entries_are_zero(pruned, stripped)
    assert wrappers(pruned)  # the pruned model is not modified by stripping


def test_keras_file_round_trip_keeps_masks_without_custom_objects(vgg_model, graph16, tmp_path):
    pruned = prune_regular_graph(vgg_model, graph=graph16)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert len(wrappers(loaded)) == len(wrappers(pruned))
    for a, b in zip(wrappers(loaded), wrappers(pruned)):
        np.testing.assert_array_equal(to_numpy(a.mask), to_numpy(b.mask))
        assert a.graph == b.graph
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


def test_keras_file_loads_in_a_fresh_process_after_import_rgp_keras(mlp_model, graph16, tmp_path):
    path = tmp_path / "pruned.keras"
    prune_regular_graph(mlp_model, graph=graph16).save(path)
    code = f"import keras, rgp_keras; m = keras.saving.load_model({str(path)!r}); print(type(m.layers[1]).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "RegularGraphPruning", out.stderr[-2000:]


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(1e-2),
        lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
        lambda: keras.optimizers.Adam(1e-2, clipnorm=0.5),
    ],
    ids=["sgd_momentum", "adam", "adamw", "clipnorm"],
)
def test_masked_weights_stay_exactly_zero_under_training(vgg_model, graph16, optimizer):
    pruned = prune_regular_graph(vgg_model, graph=graph16)
    pruned.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16, 16, 3)).astype("float32"), rng.integers(10, size=64)
    before = [to_numpy(w.kernel).copy() for w in wrappers(pruned)]
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert masked_entries_are_zero(pruned)
    assert any(not np.array_equal(b, to_numpy(w.kernel)) for b, w in zip(before, wrappers(pruned)))
    stripped_masked_entries_are_zero(pruned, strip_pruning(pruned))


def test_mixed_float16_training_keeps_masks(graph16):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential(
            [keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64, activation="relu"),
             keras.layers.Dense(64), keras.layers.Dense(4, dtype="float32")]
        )
        pruned = prune_regular_graph(model, graph=graph16)
        assert wrappers(pruned)[0].compute_dtype == "float16" and wrappers(pruned)[0].kernel.dtype == "float32"
        pruned.compile("adam", "mse")
        x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
        pruned.fit(x, np.zeros((64, 4)), epochs=2, verbose=0)
        assert masked_entries_are_zero(pruned)
        stripped_masked_entries_are_zero(pruned, strip_pruning(pruned))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        """
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import rgp_keras
        from rgp_keras.graph import RegularGraph
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64),
                                      keras.layers.Dense(4)])
            pruned = rgp_keras.prune_regular_graph(model, graph=RegularGraph.random(16, 4, seed=0))
            pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
        x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
        pruned.fit(x, np.ones((64, 4)), batch_size=16, epochs=2, verbose=0)
        wrapper = pruned.layers[1]
        kernel, mask = wrapper.kernel.numpy(), wrapper.mask.numpy()
        assert np.all(kernel[mask == 0] == 0) and np.any(kernel != 0)
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10),
        lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10),
        lambda: keras.applications.DenseNet121(input_shape=(32, 32, 3), weights=None, classes=10),
    ],
    ids=["MobileNetV2", "ResNet50", "DenseNet121"],
)
def test_real_architectures_prune_and_strip_to_equal_outputs(build, graph16):
    model = build()
    pruned = prune_regular_graph(model, graph=graph16)
    summary = pruning_summary(pruned)
    assert summary.totals["kept_params"] < summary.totals["params"]
    assert any(row["skipped"].startswith("depthwise") for row in summary) == ("mobilenet" in model.name)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    stripped = strip_pruning(pruned)
    np.testing.assert_allclose(to_numpy(stripped(x)), to_numpy(pruned(x)), atol=1e-5)  # eager: no tracing
    assert stripped.count_params() == model.count_params()


def test_nested_model_and_functional_graph(graph16):
    inner = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(64)], name="block")
    inputs = keras.Input((32,), name="features")
    hidden = keras.layers.Dense(32, name="stem")(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([inner(hidden), hidden]))
    model = keras.Model(inputs, outputs)
    pruned = prune_regular_graph(model, graph=graph16)
    block = pruned.get_layer("block")
    assert [type(layer).__name__ for layer in block.layers] == ["RegularGraphPruning", "RegularGraphPruning"]
    stripped = strip_pruning(pruned)
    assert stripped.inputs[0]._keras_history.operation.name == "features"
    x = np.ones((2, 32), "float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_layer_selection_by_name_class_and_predicate(mlp_model, graph16):
    names = [layer.name for layer in mlp_model.layers]
    by_name = prune_regular_graph(mlp_model, graph=graph16, layers=[names[0]])
    assert [isinstance(layer, RegularGraphPruning) for layer in by_name.layers] == [True, False, False, False]
    by_class = prune_regular_graph(mlp_model, graph=graph16, layers=keras.layers.Dense)
    assert [isinstance(layer, RegularGraphPruning) for layer in by_class.layers] == [True, True, True, False]
    by_predicate = prune_regular_graph(mlp_model, graph=graph16, layers=lambda layer: layer.name == names[2])
    assert [isinstance(layer, RegularGraphPruning) for layer in by_predicate.layers] == [False, False, True, False]


def test_single_layer_wrapping_inside_a_model_definition(graph16):
    layer = prune_regular_graph(keras.layers.Conv2D(32, 3), graph=graph16)
    model = keras.Sequential([keras.Input((8, 8, 16)), layer])
    assert isinstance(model.layers[0], RegularGraphPruning) and float(layer.density) == 0.25


def test_sparsity_and_degree_generate_an_optimised_graph(mlp_model):
    pruned = prune_regular_graph(mlp_model, sparsity=0.75, nodes=16, seed=3)
    graph = wrappers(pruned)[0].graph
    assert (graph.nodes, graph.degree) == (16, 4)
    assert graph.aspl <= RegularGraph.random(16, 4, seed=3).aspl
    assert prune_regular_graph(mlp_model, degree=4, nodes=16, seed=3).layers[1].graph == graph


def test_self_loops_keep_the_diagonal(mlp_model, graph16):
    pruned = prune_regular_graph(mlp_model, graph=graph16, self_loops=True)
    assert float(wrappers(pruned)[0].density) == 5 / 16


def test_graph_file_is_accepted(mlp_model, graph16, tmp_path):
    graph16.save(tmp_path / "g.npz")
    pruned = prune_regular_graph(mlp_model, graph=str(tmp_path / "g.npz"))
    assert wrappers(pruned)[0].graph == graph16


def test_reinitialize_scales_by_density_and_keeps_zeros(graph16):
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(512), keras.layers.Dense(512),
                              keras.layers.Dense(512)])
    pruned = reinitialize(prune_regular_graph(model, graph=graph16), seed=0)
    wrapper = wrappers(pruned)[0]
    kernel, mask = to_numpy(wrapper.kernel), to_numpy(wrapper.mask)
    assert np.all(kernel[mask == 0] == 0)
    kept_std = kernel[mask == 1].std()
    dense_std = model.layers[1].get_weights()[0].std()
    assert kept_std == pytest.approx(dense_std * 2, rel=0.05)  # 1 / sqrt(density 1/4)


def test_summary_counts_params_and_macs(vgg_model, graph16):
    summary = pruning_summary(prune_regular_graph(vgg_model, graph=graph16))
    row = next(r for r in summary if r["graph"])
    assert row["name"] == vgg_model.layers[1].name
    assert row["params"] == 3 * 3 * 32 * 64 + 64
    assert row["kept_params"] == 3 * 3 * 32 * 64 // 4 + 64
    assert row["macs"] == 3 * 3 * 32 * 64 * 16 * 16 and row["kept_macs"] == row["macs"] // 4
    first = summary[0]
    assert first["skipped"] and first["params"] == first["kept_params"]
    text = str(summary)
    assert "total" in text and row["name"] in text


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "none"), ({"sparsity": 0.5, "degree": 4}, "sparsity=0.5, degree=4"),
     ({"degree": 4, "graph": "g.npz"}, "degree=4, graph='g.npz'")],
)
@pytest.mark.parametrize("nodes", [16, "auto"])
def test_exactly_one_of_sparsity_degree_graph(mlp_model, kwargs, message, nodes):
    if nodes == "auto" and "graph" in kwargs:
        kwargs = {**kwargs, "graph": RegularGraph.ring_lattice(16, 4)}
        message = message.replace("'g.npz'", ".*")
    with pytest.raises(ValueError, match=f"exactly one of `sparsity`, `degree` or `graph`; got {message}"):
        prune_regular_graph(mlp_model, nodes=nodes, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"nodes": 4, "sparsity": 0.75}, r"on 4 nodes the nearest valid degree is 2, so the graph 4/2 prunes 0\.5, "
                                      r"25\.0 points less than asked: nodes=64, 60, 56, 52, 48, \.\.\. give 0\.75"),
     ({"nodes": 8, "sparsity": 0.75, "self_loops": True}, r"degree is 2 \(plus self-loops\), so the graph 8/2 "
                                                          r"prunes 0\.625, 12\.5 points less"),
     ({"nodes": 4, "sparsity": 0.123}, "no node count up to 64 gives it exactly")],
)
def test_a_graph_far_from_the_sparsity_asked_is_announced(mlp_model, kwargs, message):
    with pytest.warns(UserWarning, match=f"Asked for sparsity {kwargs['sparsity']:g}; .*{message}") as caught:
        prune_regular_graph(mlp_model, seed=0, **kwargs)
    assert len(caught) == 1
    prune_regular_graph(mlp_model, nodes=16, sparsity=0.75, self_loops=True, seed=0)  # 16/3 + self-loops: exact, silent


def test_unbuilt_model_is_rejected(graph16):
    model = keras.Sequential([keras.layers.Dense(64), keras.layers.Dense(64)])
    with pytest.raises(ValueError, match="not built.*keras.Input"):
        prune_regular_graph(model, graph=graph16)


def test_subclassed_model_says_to_wrap_its_layers(graph16):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(64)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 32)))
    with pytest.raises(TypeError, match="subclassed model.*Wrap its layers"):
        prune_regular_graph(net, graph=graph16)


def test_double_pruning_is_rejected(mlp_model, graph16):
    pruned = prune_regular_graph(mlp_model, graph=graph16)
    with pytest.raises(ValueError, match="already pruned by rgp_keras"):
        prune_regular_graph(pruned, graph=graph16)
    with pytest.raises(ValueError, match="already pruned"):
        prune_regular_graph(pruned.layers[1], graph=graph16)


def test_requested_layer_that_cannot_be_masked_says_why(vgg_model, graph16):
    batch_norm = next(layer.name for layer in vgg_model.layers if isinstance(layer, keras.layers.BatchNormalization))
    with pytest.raises(ValueError, match=f"{batch_norm}.*no channel-pair kernel"):
        prune_regular_graph(vgg_model, graph=graph16, layers=[batch_norm])
    with pytest.raises(ValueError, match=r"'conv2d\w*' cannot .*: 3 input channels: fewer than the graph's 16 nodes"):
        prune_regular_graph(vgg_model, graph=graph16, layers=[vgg_model.layers[0].name])  # 3 in, 32 out
    depthwise = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.DepthwiseConv2D(3, name="dw")])
    with pytest.raises(ValueError, match="depthwise"):
        prune_regular_graph(depthwise, graph=graph16, layers=["dw"])
    with pytest.raises(ValueError, match="No layer named"):
        prune_regular_graph(vgg_model, graph=graph16, layers=["nope"])


def test_graph_larger_than_every_layer_is_rejected(mlp_model):
    big = RegularGraph.random(256, 8, seed=0)
    with pytest.raises(ValueError, match="can carry a 256-node graph.*at most 128 channels"):
        prune_regular_graph(mlp_model, graph=big)


def test_invalid_graph_file_is_rejected_and_model_untouched(mlp_model, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a graph")
    before = weights_of(mlp_model)
    with pytest.raises(ValueError, match="not a readable graph file"):
        prune_regular_graph(mlp_model, graph=str(bad))
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(mlp_model)))


def test_importing_rgp_keras_does_not_import_tf_keras_or_tfmot():
    code = (
        "import sys, keras, rgp_keras\n"
        "m = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32), keras.layers.Dense(32), "
        "keras.layers.Dense(2)])\n"
        "p = rgp_keras.prune_regular_graph(m, degree=4, nodes=16, seed=0)\n"
        "rgp_keras.pruning_summary(rgp_keras.strip_pruning(p))\n"
        "print(sorted(m for m in ('tf_keras', 'tensorflow_model_optimization') if m in sys.modules))"
    )
    # A user's own TF_USE_LEGACY_KERAS=1 would make TensorFlow itself load tf_keras.
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_public_api_is_exported():
    for name in ("prune_regular_graph", "strip_pruning", "pruning_summary", "RegularGraphPruning",
                 "reinitialize", "kernel_mask", "channel_groups", "RegularGraph", "optimize"):
        assert name in rgp_keras.__all__ and getattr(rgp_keras, name)


def test_regular_graph_summaries_log_sparsity_and_graph_statistics(mlp_model, graph16, tmp_path):
    import glob

    import tensorflow as tf

    pruned = prune_regular_graph(mlp_model, graph=graph16)
    pruned.compile("adam", "mse")
    x = np.random.default_rng(0).random((32, 64)).astype("float32")
    pruned.fit(x, np.zeros((32, 10)), epochs=2, verbose=0, callbacks=[rgp_keras.RegularGraphSummaries(tmp_path)])
    logged = {}
    for path in glob.glob(str(tmp_path / "sparsity" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert logged[("graph/aspl", 0)] == pytest.approx(graph16.aspl) and logged[("graph/degree", 0)] == 4
    sparsities = [v for (tag, step), v in logged.items() if tag.endswith("/sparsity") and step == 1]
    assert len(sparsities) == 2 and all(v == pytest.approx(0.75) for v in sparsities)
    with pytest.raises(ValueError, match="needs a model pruned"):
        mlp_model.compile("adam", "mse")
        mlp_model.fit(x, np.zeros((32, 10)), epochs=1, verbose=0, callbacks=[rgp_keras.RegularGraphSummaries(tmp_path)])


def test_the_wrapped_layers_losses_are_kept(graph16):
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                              keras.layers.Dense(64, activity_regularizer="l2", kernel_regularizer="l2"),
                              keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(size=(8, 32)).astype("float32")
    model(x)
    pruned = prune_regular_graph(model, graph=graph16, layers=[model.layers[1].name], assign_channels=False)
    pruned(x)
    assert len(pruned.losses) == len(model.losses) == 2
    stripped = strip_pruning(pruned)  # the same masked kernel in a plain Dense: the same two penalties
    stripped(x)
    assert sorted(float(loss) for loss in pruned.losses) == pytest.approx(
        sorted(float(loss) for loss in stripped.losses), rel=1e-5)
    pruned.compile("sgd", "mse")
    history = pruned.fit(x, np.zeros((8, 4)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_subclassed_model_nested_in_a_functional_one_is_refused_by_name(graph16):
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.first, self.second = keras.layers.Dense(64), keras.layers.Dense(64)

        def call(self, inputs):
            return self.second(self.first(inputs))

    inputs = keras.Input((32,))
    hidden = keras.layers.Dense(64)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(Block(name="block")(hidden)))
    before = weights_of(model)
    for call in (lambda: prune_regular_graph(model, graph=graph16), lambda: strip_pruning(model)):
        with pytest.raises(TypeError, match="contains the subclassed model 'block' \\(Block\\).*Rebuild that block"):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model)))


def test_the_mask_is_not_a_weight_and_files_with_a_saved_mask_still_load(vgg_model, graph16, tmp_path):
    pruned = prune_regular_graph(vgg_model, graph=graph16)
    assert pruned.count_params() == vgg_model.count_params()  # the mask costs no parameters...
    assert len(pruned.weights) == len(vgg_model.weights)  # ...and no checkpoint entries
    pruned.save(tmp_path / "p.keras")
    assert keras.saving.load_model(tmp_path / "p.keras").get_layer(wrappers(pruned)[0].name).get_config()[
        "format_version"] == 2
    data = Path(__file__).parent / "data"
    old = keras.saving.load_model(data / "pruned_format1.keras")  # written with the mask as a weight
    io = np.load(data / "pruned_format1_io.npz")
    np.testing.assert_allclose(to_numpy(old(io["x"])), io["y"], atol=1e-6)
    assert not any("mask" in v.path for v in old.weights) and masked_entries_are_zero(old)
