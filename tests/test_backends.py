"""Keras 3 on the JAX and torch backends: prune (channels, masks), data-aware steps, fit (also with
rgp_keras.distiller), strip, save, then LiteRT export under TensorFlow; and keras.distribution.DataParallel on
JAX. Each backend runs in its own process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # fresh processes, each importing a backend

TRAIN_ON_BACKEND = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras, rgp_keras
    from rgp_keras.errors import BackendError
    out = sys.argv[1]
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(inputs)))
    x = layers.Add()([x, layers.Conv2D(16, 3, padding="same")(x)])
    x = layers.Conv2D(32, 1, activation="relu")(layers.DepthwiseConv2D(3, padding="same")(x))
    x = layers.Dense(32, activation="relu")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Dense(4)(x))
    rng = np.random.default_rng(0)
    data, labels = rng.random((128, 8, 8, 3)).astype("float32"), rng.integers(0, 4, 128)
    before = [w.copy() for w in model.get_weights()]
    thin = rgp_keras.prune_channels(model, keep=0.5, calibration_data=data, verbose=0)  # the width axis
    assert thin.count_params() < 0.5 * model.count_params()
    assert "least squares" in rgp_keras.pruning_summary(thin).criteria[0]
    assert np.isfinite(keras.ops.convert_to_numpy(thin(data[:4]))).all()
    stream = layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(inputs))  # a linear bottleneck
    stream = layers.Add()([stream, layers.Conv2D(8, 3, padding="same")(inputs)])
    head = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 1, activation="relu")(stream))
    bottleneck = keras.Model(inputs, layers.Dense(4)(head))
    from rgp_keras.channels.basis import principal_basis
    from rgp_keras.channels.spaces import channel_spaces
    from rgp_keras.data_aware.calibration import Calibration
    spaces = channel_spaces(bottleneck)
    free = [root for root in spaces.spaces() if spaces.producers(root) and not spaces.frozen(root)]
    turned, roots = principal_basis(bottleneck, spaces, free,
                                    Calibration(data, [(None, 8, 8, 3)], ["x"], batch_size=32))
    assert len(roots) == 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(turned(data[:8])),
                               keras.ops.convert_to_numpy(bottleneck(data[:8])), rtol=1e-4, atol=1e-4)
    thin = rgp_keras.prune_channels(bottleneck, keep=0.5, calibration_data=data, verbose=0)
    assert "1 linear bottleneck space(s) first turned" in rgp_keras.pruning_summary(thin).criteria[0]
    pruned = rgp_keras.prune_regular_graph(model, sparsity=0.75, nodes=8, seed=0, calibration_data=data)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the dense model is untouched
    summary = rgp_keras.pruning_summary(pruned)
    assert summary.totals["kept_macs"] < summary.totals["macs"] and "output error" in str(summary)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(data, labels, epochs=2, batch_size=32, verbose=0,
               callbacks=[rgp_keras.RegularGraphSummaries(out + "/logs")])
    trainer = rgp_keras.distiller(pruned, model)  # then an epoch towards the dense model's outputs
    trainer.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    assert model.trainable
    wrappers = [w for w in pruned.layers if isinstance(w, rgp_keras.RegularGraphPruning)]
    assert len(wrappers) == 3
    for w in wrappers:
        kernel, mask = keras.ops.convert_to_numpy(w.kernel), keras.ops.convert_to_numpy(w.mask)
        assert np.all(kernel[mask == 0] == 0) and np.any(kernel[mask == 1] != 0), w.name
    fresh = rgp_keras.prune_regular_graph(model, sparsity=0.75, nodes=8, seed=0)
    rgp_keras.reinitialize(fresh, seed=0)
    stripped = rgp_keras.strip_pruning(pruned)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stripped(data[:8])),
                               keras.ops.convert_to_numpy(pruned(data[:8])), atol=1e-5)
    pruned.save(out + "/pruned.keras")
    np.save(out + "/x.npy", data[:8])
    np.save(out + "/y.npy", keras.ops.convert_to_numpy(pruned(data[:8])))
    try:
        rgp_keras.export_tflite(pruned, out + "/model.tflite")
    except BackendError as error:
        print(json.dumps({"backend": keras.backend.backend(), "export_error": str(error)}))
    """
)

# The CLI's export, in a process whose shell sets KERAS_BACKEND to the training backend: it exports under
# TensorFlow, and the file reproduces the backend's outputs.
EXPORT_UNDER_TENSORFLOW = textwrap.dedent(
    """
    import sys
    import numpy as np
    from rgp_keras.cli import main
    out = sys.argv[1]
    # tiny groups: force the compact layout
    assert main(["export", out + "/pruned.keras", "-o", out + "/cli.tflite", "--layout", "gather"]) == 0
    import keras, rgp_keras
    assert keras.backend.backend() == "tensorflow"
    # a compiled model saved under torch names a torch optimizer module: loading with compile=False keeps it out
    assert "torch" not in sys.modules, "loading imported torch"
    x, y = np.load(out + "/x.npy"), np.load(out + "/y.npy")
    model = keras.saving.load_model(out + "/pruned.keras", compile=False)
    np.testing.assert_allclose(model(x).numpy(), y, atol=1e-5)
    np.testing.assert_allclose(rgp_keras.run_tflite(out + "/cli.tflite", x), y, atol=1e-4)
    print("OK")
    """
)


def run(code, backend, *argv, env=None):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    out = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_prune_fit_save_under_a_backend_then_export_under_tensorflow(backend, tmp_path):
    stdout = run(TRAIN_ON_BACKEND, backend, tmp_path)
    reported = json.loads(stdout.strip().splitlines()[-1])
    assert reported["backend"] == backend  # the dev install has the backend; the test never silently skips it
    # export under JAX/torch says what to do instead, and leaves no file
    assert "TensorFlow" in reported["export_error"] and "rgp export pruned.keras" in reported["export_error"]
    assert not (tmp_path / "model.tflite").exists()
    assert list((tmp_path / "logs" / "sparsity").glob("events.*"))
    stdout = run(EXPORT_UNDER_TENSORFLOW, backend, tmp_path)
    assert stdout.strip().endswith("OK") and "compacted" in stdout, stdout[-2000:]


def test_data_parallel_on_jax_matches_one_device_and_keeps_masked_weights_zero():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "data_parallel_jax.py"), "--train-samples", "3000"],
                         capture_output=True, text=True, timeout=600,
                         # the example asks XLA for two host devices itself
                         env={**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DataParallel over 2 devices (cpu)" in out.stdout and "masked weights zero: True" in out.stdout
    difference = float(out.stdout.split("single-device run:")[1].split()[0])
    assert difference <= 1e-5, out.stdout
