"""Training-step overhead of RGP masks: median step time of the pruned model over the dense
model, beside TF-MOT's prune_low_magnitude on the same architecture (tf_keras).

Writes benchmarks/results/train_overhead.md.

    python benchmarks/train_overhead.py
"""

import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
BATCH, STEPS, WARMUP, ROUNDS = 32, 12, 3, 3


def vgg(layers, Input, Sequential):
    blocks = [Input((32, 32, 3))]
    for width in (64, 128, 256):
        blocks += [layers.Conv2D(width, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
                   layers.Conv2D(width, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
                   layers.MaxPooling2D()]
    blocks += [layers.GlobalAveragePooling2D(), layers.Dense(256, activation="relu"), layers.Dense(10)]
    return Sequential(blocks)


def step_times(model, data, callbacks=()):
    """Per-batch wall times (s) of `fit`, after warm-up, measured by a callback."""
    if type(model).__module__.startswith("tf_keras"):
        from tf_keras.callbacks import Callback as base
    else:
        from keras.callbacks import Callback as base

    class Timer(base):
        def on_train_batch_begin(self, batch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.began)

    times = []
    x, y = data
    model.fit(x, y, batch_size=BATCH, epochs=1, steps_per_epoch=STEPS + WARMUP, verbose=0,
              callbacks=[Timer(), *callbacks])
    return times[WARMUP:]


def keras3_pair(name):
    import keras

    import rgp_keras

    if name == "VGG-style":
        dense = vgg(keras.layers, keras.Input, keras.Sequential)
    else:
        dense = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    pruned = rgp_keras.prune_regular_graph(dense, degree=8, nodes=64, seed=0)
    for model in (dense, pruned):
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return dense, pruned


def tfmot_pair(name):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    if name == "VGG-style":
        dense = vgg(tf_keras.layers, tf_keras.Input, tf_keras.Sequential)
    else:
        dense = tf_keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.875, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(dense, pruning_schedule=schedule)
    for model in (dense, pruned):
        model.compile(tf_keras.optimizers.SGD(0.01, momentum=0.9),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return dense, pruned, [tfmot.sparsity.keras.UpdatePruningStep()]


def held_megabytes(dense, pruned):
    """(dense weights, RGP weights + mask constants, what format 1 held: RGP weights + a float mask per kernel)."""
    import rgp_keras

    size = lambda variables: sum(4 * int(np.prod(v.shape)) for v in variables)
    wrappers = [layer for layer in pruned.layers if isinstance(layer, rgp_keras.RegularGraphPruning)]
    constants = sum(array.nbytes for w in wrappers for array in (w._blocks, w._pairs) if array is not None)
    old_masks = sum(4 * int(np.prod(w.kernel.shape)) for w in wrappers)
    return size(dense.weights) / 1e6, (size(pruned.weights) + constants) / 1e6, (size(pruned.weights) + old_masks) / 1e6


def ratio(dense, pruned, data, callbacks=()):
    """Median pruned step / median dense step, rounds interleaved so both see the same load."""
    dense_times, pruned_times = [], []
    for _ in range(ROUNDS):
        dense_times += step_times(dense, data)
        pruned_times += step_times(pruned, data, callbacks)
    d, p = statistics.median(dense_times), statistics.median(pruned_times)
    return d, p, p / d


def main():
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(BATCH * (STEPS + WARMUP), 32, 32, 3)).astype("float32"),
            rng.integers(10, size=BATCH * (STEPS + WARMUP)))
    rows = ["| model | dense step (ms) | RGP step (ms) | RGP / dense | goal <= 1.10 | TF-MOT prune_low_magnitude / dense "
            "(tf_keras) | weights held, dense / RGP / RGP with the mask as a weight (MB) |",
            "|---|---|---|---|---|---|---|"]
    for name in ("VGG-style", "MobileNetV2"):
        dense, pruned = keras3_pair(name)
        held = held_megabytes(dense, pruned)
        d, p, r = ratio(dense, pruned, data)
        dense_2, pruned_2, callbacks = tfmot_pair(name)
        _, _, r_tfmot = ratio(dense_2, pruned_2, data, callbacks)
        rows.append(f"| {name} | {1e3 * d:.1f} | {1e3 * p:.1f} | {r:.3f} | {'met' if r <= 1.10 else 'not met'} | "
                    f"{r_tfmot:.3f} | {held[0]:.2f} / {held[1]:.2f} / {held[2]:.2f} |")
        print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = "\n".join([
        "# Training-step overhead",
        "",
        f"`python benchmarks/train_overhead.py`: 32x32x3 inputs, batch {BATCH}, SGD+momentum, RGP n = 64, k = 8 "
        f"(87.5 %), TF-MOT ConstantSparsity 0.875; median of {ROUNDS} x {STEPS} steps after {WARMUP} warm-up steps, "
        f"dense and pruned interleaved; {platform.machine()}, CPU only, {os.cpu_count()} cores. Weights held: "
        "float32 variables (+ RGP's mask constants: n x n blocks, or channel pairs when channels do not divide "
        "by n); before wrapper "
        "format 2 each masked kernel also had a kernel-sized float mask weight, saved in every checkpoint.",
        "",
        *rows,
        "",
    ])
    (RESULTS / "train_overhead.md").write_text(text)
    print(f"wrote {RESULTS / 'train_overhead.md'}")


if __name__ == "__main__":
    main()
