"""Training-step overhead of RGP masks: median step time of the pruned model over the dense
model on each Keras 3 backend (TensorFlow, JAX, torch; CPU), beside TF-MOT's prune_low_magnitude
on the same architecture (tf_keras, TensorFlow only).

Writes benchmarks/results/train_overhead.md; each backend runs in its own process.

    python benchmarks/train_overhead.py                     # every backend
    python benchmarks/train_overhead.py --backend jax       # one backend, rows printed only
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
BATCH, STEPS, WARMUP, ROUNDS = 32, 12, 3, 3
BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("VGG-style", "MobileNetV2")


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
            [float(value) for value in (logs or {}).values()]  # wait for the step (JAX dispatches asynchronously)
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


def measure(backend):
    """One row per model, measured in this process (KERAS_BACKEND=backend before Keras is imported)."""
    os.environ["KERAS_BACKEND"] = backend
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(BATCH * (STEPS + WARMUP), 32, 32, 3)).astype("float32"),
            rng.integers(10, size=BATCH * (STEPS + WARMUP)))
    for name in MODELS:
        dense, pruned = keras3_pair(name)
        held = held_megabytes(dense, pruned)
        d, p, r = ratio(dense, pruned, data)
        r_tfmot = None
        if backend == "tensorflow":  # TF-MOT prunes tf_keras models only
            dense_2, pruned_2, callbacks = tfmot_pair(name)
            r_tfmot = ratio(dense_2, pruned_2, data, callbacks)[2]
        print(json.dumps(dict(backend=backend, model=name, dense=d, rgp=p, ratio=r, tfmot=r_tfmot, held=held)),
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, help="measure one backend and print its rows (no file)")
    args = parser.parse_args()
    if args.backend:
        return measure(args.backend)
    rows = ["| backend | model | dense step (ms) | RGP step (ms) | RGP / dense | goal <= 1.10 | TF-MOT "
            "prune_low_magnitude / dense (tf_keras) | weights held, dense / RGP / RGP with the mask as a weight (MB) |",
            "|---|---|---|---|---|---|---|---|"]
    for backend in BACKENDS:
        out = subprocess.run([sys.executable, __file__, "--backend", backend], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{backend}: {out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            tfmot = f"{row['tfmot']:.3f}" if row["tfmot"] is not None else "- (tf_keras runs on TensorFlow)"
            held = " / ".join(f"{mb:.2f}" for mb in row["held"])
            rows.append(f"| {backend} | {row['model']} | {1e3 * row['dense']:.1f} | {1e3 * row['rgp']:.1f} | "
                        f"{row['ratio']:.3f} | {'met' if row['ratio'] <= 1.10 else 'not met'} | {tfmot} | {held} |")
            print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = "\n".join([
        "# Training-step overhead",
        "",
        f"`python benchmarks/train_overhead.py`: Keras 3 on each backend (one process each), 32x32x3 inputs, "
        f"batch {BATCH}, SGD+momentum, RGP n = 64, k = 8 "
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
