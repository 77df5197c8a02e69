"""Wrappers built inside a subclassed model's __init__: zeros from the start, summary, and export."""

import keras
import numpy as np
import pytest

import rgp_keras


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(64, activation="relu")
        self.pruned = rgp_keras.prune_regular_graph(keras.layers.Dense(64, activation="relu"), degree=4, nodes=16)
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.pruned(self.hidden(x)))


@pytest.fixture
def trained(tmp_path):
    keras.utils.set_random_seed(0)
    model = Net()
    x = np.random.default_rng(0).random((64, 32), dtype="float32")
    model(x[:1])
    assert np.mean(model.pruned.kernel.numpy() == 0) == 0.75  # zero from the (symbolic) build on
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(64) % 10, epochs=2, verbose=0)
    return model, x


def test_masked_kernel_is_zero_after_build_and_fit_and_the_summary_knows_the_macs(trained):
    model, _ = trained
    assert np.all(model.pruned.kernel.numpy()[model.pruned.mask.numpy() == 0] == 0)
    assert np.mean(model.pruned.kernel.numpy() == 0) == 0.75
    summary = rgp_keras.pruning_summary(model)
    row = next(row for row in summary if row["graph"] == "16/4")
    assert (row["macs"], row["kept_macs"]) == (64 * 64, 64 * 64 // 4)
    assert summary.totals["mac_reduction"] > 0.3


def test_strip_and_compact_export_say_what_works_instead(trained, tmp_path):
    model, x = trained
    with pytest.raises(TypeError, match="subclassed model '\\w+' \\(Net\\).*export_tflite\\(model, path, "
                                        "compact=False\\)"):
        rgp_keras.strip_pruning(model)
    with pytest.raises(TypeError, match="subclassed model '\\w+' \\(Net\\).*compact=False"):
        rgp_keras.export_tflite(model, tmp_path / "c.tflite")
    assert not (tmp_path / "c.tflite").exists()
    report = rgp_keras.export_tflite(model, tmp_path / "s.tflite", compact=False)
    assert report.params == model.count_params()  # the mask is not a parameter, in Keras or in the file
    np.testing.assert_allclose(rgp_keras.run_tflite(tmp_path / "s.tflite", x), model(x).numpy(), atol=1e-5)


def test_an_unpruned_subclassed_model_exports_as_it_is(tmp_path):
    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.head = keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)

        def call(self, x):
            return self.head(self.hidden(x))

    model = Plain()
    x = np.random.default_rng(0).random((8, 16), dtype="float32")
    model(x)
    report = rgp_keras.export_tflite(model, tmp_path / "p.tflite")
    assert report.format == "dense" and not report.compacted
    assert "wrapper" not in str(report) and "no RGP layers: exported as it is" in str(report)
    np.testing.assert_allclose(rgp_keras.run_tflite(report.path, x), model(x).numpy(), atol=1e-5)
