"""Pruned models saved by one process load in a fresh one with the documented imports, in any import order."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
tfmot = pytest.importorskip("tensorflow_model_optimization")
import keras  # noqa: E402

import rgp_keras  # noqa: E402
from rgp_keras.graph import RegularGraph  # noqa: E402

pytestmark = pytest.mark.slow  # fresh processes

LOAD = """
import numpy as np
x = np.load({x!r})
for path, want, framework in {files!r}:
    if framework == "keras":
        loaded = keras.saving.load_model(path)
        wrappers = [l for l in loaded.layers if isinstance(l, rgp_keras.RegularGraphPruning)]
    else:
        with tfmot.sparsity.keras.prune_scope():
            loaded = tf_keras.models.load_model(path)
        wrappers = [l for l in loaded.layers if type(l).__name__ == "PruneRegularGraph"]
    assert wrappers, path
    np.testing.assert_allclose(np.asarray(loaded(x)), np.load(want), atol=1e-5)
    print("loaded", path)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Keras 3 pruned model (.keras) and a tf_keras one (.h5 and .keras), with inputs and expected outputs."""
    folder = tmp_path_factory.mktemp("saved")
    graph = RegularGraph.random(8, 2, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    np.save(folder / "x.npy", x)
    files = []
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16),
        ]
    )
    pruned = rgp_keras.prune_regular_graph(model, graph=graph)
    pruned.save(folder / "k3.keras")
    np.save(folder / "k3.npy", np.asarray(pruned(x)))
    files.append((str(folder / "k3.keras"), str(folder / "k3.npy"), "keras"))
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((16,)),
            layers.Dense(32, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(16),
        ]
    )
    pruned = rgp_keras.prune_regular_graph(model, graph=graph)
    np.save(folder / "tk.npy", pruned(x).numpy())
    for name in ("tk.h5", "tk.keras"):
        pruned.save(folder / name)
        files.append((str(folder / name), str(folder / "tk.npy"), "tf_keras"))
    return str(folder / "x.npy"), files


@pytest.mark.parametrize(
    "imports",
    [
        "import keras, tf_keras, tensorflow_model_optimization as tfmot, rgp_keras",
        "import rgp_keras, keras, tf_keras, tensorflow_model_optimization as tfmot",
    ],
    ids=["frameworks-first", "rgp_keras-first"],
)
def test_fresh_process_loads_every_format(saved, imports):
    x, files = saved
    script = imports + "\n" + textwrap.dedent(LOAD).format(x=x, files=files)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("loaded") == len(files)
