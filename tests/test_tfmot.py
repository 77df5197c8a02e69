"""Tests for the tf_keras / TF-MOT path: PruneRegularGraph wrappers that TF-MOT's own tools accept."""

import glob
import sys

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
tfmot = pytest.importorskip("tensorflow_model_optimization")
import tensorflow as tf  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude  # noqa: E402

import rgp_keras  # noqa: E402
from rgp_keras.graph import RegularGraph  # noqa: E402
from rgp_keras.masking.masks import kernel_mask  # noqa: E402
from rgp_keras.tfmot import adapter as tfmot_adapter  # noqa: E402
from rgp_keras.tfmot.layers import PruneRegularGraph  # noqa: E402

layers = tf_keras.layers


@pytest.fixture(scope="module")
def graph16():
    return RegularGraph.random(16, 2, seed=0)


def cnn():
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([
        tf_keras.Input((12, 12, 3)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(32, 3),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10),
    ])


def data(model, n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, *model.input_shape[1:])).astype("float32"), rng.integers(10, size=n)


def fit(model, callbacks=(), epochs=2):
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(model)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), *callbacks])
    return x


def rgp_layers(model):
    return [layer for layer in model.layers if isinstance(layer, PruneRegularGraph)]


def test_wrappers_are_tfmot_prune_low_magnitude_with_graph_masks(graph16):
    model = cnn()
    before = [w.copy() for w in model.get_weights()]
    pruned = rgp_keras.prune_regular_graph(model, graph=graph16)
    wrapped = rgp_layers(pruned)
    assert [type(w.layer).__name__ for w in wrapped] == ["Conv2D", "Dense"]
    assert all(isinstance(w, PruneLowMagnitude) for w in wrapped)
    for wrapper in wrapped:
        expected = kernel_mask(graph16, wrapper.kernel.shape, "dense" if wrapper.kernel.shape.rank == 2 else "conv")
        np.testing.assert_array_equal(wrapper.mask.numpy(), expected)
        assert np.all(wrapper.kernel.numpy()[~expected] == 0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_tfmot_callbacks_and_strip_keep_the_rgp_masks(graph16, tmp_path):
    pruned = rgp_keras.prune_regular_graph(cnn(), graph=graph16)
    masks = [w.mask.numpy().copy() for w in rgp_layers(pruned)]
    x = fit(pruned, [tfmot.sparsity.keras.PruningSummaries(log_dir=str(tmp_path))])
    for wrapper, mask in zip(rgp_layers(pruned), masks):
        np.testing.assert_array_equal(wrapper.mask.numpy(), mask)  # never recomputed by magnitude
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    for wrapper, mask in zip(rgp_layers(pruned), masks):
        kernel = stripped.get_layer(wrapper.layer.name).kernel.numpy()
        assert np.all(kernel[mask == 0] == 0) and np.all(kernel[mask == 1] != 0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    # TensorBoard receives the RGP sparsity (1 - k/n = 0.875) of each mask.
    logged = {}
    for path in glob.glob(str(tmp_path / "**" / "events.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.endswith("/sparsity"):
                    logged[value.tag] = float(tf.make_ndarray(value.tensor))
    assert logged and all(abs(v - 0.875) < 0.01 for v in logged.values()), logged


def test_rgp_strip_and_summary_work_on_tf_keras(graph16):
    pruned = rgp_keras.prune_regular_graph(cnn(), graph=graph16)
    x = fit(pruned, epochs=1)
    stripped = rgp_keras.strip_pruning(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Conv2D", "BatchNormalization", "ReLU",
                                                           "Flatten", "Dense", "Dense"]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    summary = rgp_keras.pruning_summary(pruned)
    assert summary[1]["graph"] == "16/2" and summary[1]["kept_params"] == 32 * 32 * 9 // 8 + 32
    assert summary[0]["skipped"] and summary.totals["kept_macs"] < summary.totals["macs"]


def test_coexists_with_prune_low_magnitude(graph16):
    tf_keras.utils.set_random_seed(0)
    magnitude = tfmot.sparsity.keras.prune_low_magnitude(
        layers.Dense(64, activation="relu"), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1)
    )
    model = tf_keras.Sequential(
        [
            tf_keras.Input((64,)),
            layers.Dense(64, activation="relu"),
            magnitude,
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )
    pruned = rgp_keras.prune_regular_graph(model, graph=graph16, skip_first=False)
    kinds = [type(layer).__name__ for layer in pruned.layers]
    assert kinds == ["PruneRegularGraph", "PruneLowMagnitude", "PruneRegularGraph", "Dense"]
    fit(pruned)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    sparsities = [float(np.mean(layer.kernel.numpy() == 0)) for layer in stripped.layers]
    assert sparsities[0] == 0.875 and sparsities[2] == 0.875 and abs(sparsities[1] - 0.5) < 0.01


def test_custom_prunable_layer_is_accepted(graph16):
    class Projection(layers.Layer, tfmot.sparsity.keras.PrunableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], 48), initializer="ones")

        def call(self, inputs):
            return tf.matmul(inputs, self.w)

        def get_prunable_weights(self):
            return [self.w]

    model = tf_keras.Sequential([tf_keras.Input((32,)), Projection(name="projection"), layers.Dense(4)])
    pruned = rgp_keras.prune_regular_graph(model, graph=graph16, layers=["projection"])
    wrapper = pruned.layers[0]
    np.testing.assert_array_equal(wrapper.mask.numpy(), kernel_mask(graph16, (32, 48), "dense"))


@pytest.mark.parametrize("suffix", [".h5", "_savedmodel"])
def test_save_and_load_keep_the_masks(graph16, tmp_path, suffix):
    pruned = rgp_keras.prune_regular_graph(cnn(), graph=graph16)
    x = fit(pruned, epochs=1)
    path = str(tmp_path / f"model{suffix}")
    pruned.save(path)
    with tfmot.sparsity.keras.prune_scope():
        loaded = tf_keras.models.load_model(path)
    for original, restored in zip(rgp_layers(pruned), rgp_layers(loaded)):
        np.testing.assert_array_equal(original.mask.numpy(), restored.mask.numpy())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    if suffix == ".h5":  # our own registration is enough too
        assert len(rgp_layers(tf_keras.models.load_model(path))) == 2


def test_model_already_pruned_by_prune_low_magnitude_is_rejected(graph16):
    model = tfmot.sparsity.keras.prune_low_magnitude(cnn())
    with pytest.raises(ValueError, match="already pruned by TF-MOT's prune_low_magnitude"):
        rgp_keras.prune_regular_graph(model, graph=graph16)
    with pytest.raises(ValueError, match="already pruned.*prune_low_magnitude"):
        rgp_keras.prune_regular_graph(model, graph=graph16, layers=[model.layers[1].name])
    with pytest.raises(ValueError, match="already pruned"):
        rgp_keras.prune_regular_graph(model.layers[1], graph=graph16)


def test_keras_3_and_tf_keras_helpers_name_both_paths(graph16, tmp_path):
    import keras

    keras_3 = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32), keras.layers.Dense(32)])
    with pytest.raises(TypeError, match="tf_keras Model for the TF-MOT path.*Keras 3 models go through"):
        tfmot_adapter.TfKeras().check_strippable(keras_3)
    pruned = rgp_keras.prune_regular_graph(cnn(), graph=graph16)
    with pytest.raises(TypeError, match="tf_keras \\(Keras 2\\).*`export_tflite` takes Keras 3.*TF-MOT path"):
        rgp_keras.export_tflite(pruned, tmp_path / "m.tflite")
    with pytest.raises(TypeError, match="`reinitialize` takes Keras 3"):
        rgp_keras.reinitialize(pruned)
    assert not list(tmp_path.iterdir())


def test_missing_tfmot_says_how_to_install(graph16, monkeypatch):
    tfmot_adapter._api.cache_clear()
    monkeypatch.setitem(sys.modules, "tensorflow_model_optimization", None)
    monkeypatch.delitem(sys.modules, "rgp_keras.tfmot.layers")
    try:
        with pytest.raises(ImportError, match="pip install 'tensorflow-model-optimization"):
            rgp_keras.prune_regular_graph(cnn(), graph=graph16)
    finally:
        monkeypatch.undo()
        tfmot_adapter._api.cache_clear()


@pytest.mark.filterwarnings("ignore:Calibration data has fewer rows")  # 256 samples, a 64x64 Dense: expected
def test_data_aware_pruning_on_the_tf_keras_path(graph16):
    model = cnn()
    rng = np.random.default_rng(0)
    calibration, held_out = rng.normal(size=(256, 12, 12, 3)), rng.normal(size=(32, 12, 12, 3)).astype("float32")
    plain = rgp_keras.prune_regular_graph(model, graph=graph16, assign_channels=False)
    aware = rgp_keras.prune_regular_graph(model, graph=graph16, calibration_data=calibration)
    want = model(held_out).numpy()
    error = lambda pruned: float(np.mean((pruned(held_out).numpy() - want) ** 2))
    assert error(aware) < 0.6 * error(plain)  # random weights and inputs: about 0.5 (0.45-0.51 over code versions)
    wrappers = [layer for layer in aware.layers if isinstance(layer, PruneLowMagnitude)]
    assert wrappers and all(layer.data_aware["error_after"] < layer.data_aware["error_before"] for layer in wrappers)
    for layer in wrappers:
        assert np.all(layer.kernel.numpy()[layer.mask.numpy() == 0] == 0.0)
    assert "output error" in str(rgp_keras.pruning_summary(aware))
    assert "reconstruction fit on 256 samples + 1792 mixes of pairs" in str(rgp_keras.pruning_summary(aware))
    stripped = tfmot.sparsity.keras.strip_pruning(aware)
    np.testing.assert_allclose(stripped(held_out).numpy(), aware(held_out).numpy(), atol=1e-5)
