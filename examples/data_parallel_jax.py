"""Data-parallel fine-tuning of an RGP model with Keras 3's own `keras.distribution` API, on JAX.

`keras.distribution.DataParallel` replicates the model over the devices and
splits every batch between them; `model.fit` runs as usual. On a CPU-only
machine the script asks XLA for two host devices, so the same code that runs
on several GPUs/TPUs (or hosts, after `jax.distributed.initialize()`) runs
here. It then trains the same model on one device with the same global batch
and prints how far the two runs' weights are apart: data parallelism changes
where the work runs, not what is computed; masked weights stay exactly zero.

    python examples/data_parallel_jax.py [--train-samples 60000] [--epochs 1] [--devices 2]

(tf_keras / TF-MOT users distribute with tf.distribute instead: see
examples/multi_worker.py and the README's "Distributed training" section.)
"""

import argparse
import os
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--devices", type=int, default=2, help="host devices XLA makes on a CPU-only machine")
    args = parser.parse_args()
    if "keras" in sys.modules:
        sys.exit("run this example as a script: the backend is chosen before Keras is imported")
    os.environ["KERAS_BACKEND"] = "jax"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax
    import keras
    import numpy as np

    import rgp_keras

    (x_train, y_train), (x_test, y_test) = rgp_keras.load_mnist()
    x_train = x_train[: args.train_samples].reshape(-1, 784).astype("float32") / 255
    y_train = y_train[: args.train_samples]
    x_test = x_test.reshape(-1, 784).astype("float32") / 255

    def train():
        keras.utils.set_random_seed(0)  # the same dense weights in both runs
        model = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(256, activation="relu")
                                                          for _ in range(3)] + [keras.layers.Dense(10)])
        pruned = rgp_keras.prune_regular_graph(model, sparsity=0.875, nodes=32, seed=0)  # seed: the same graph
        pruned.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
        # shuffle=False: both runs see the same batches in the same order
        pruned.fit(x_train, y_train, batch_size=128, epochs=args.epochs, shuffle=False, verbose=0)
        return pruned

    devices = jax.devices()
    with keras.distribution.DataParallel(devices=devices).scope():
        shared = train()
    single = train()
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(shared.get_weights(), single.get_weights()))
    zeros = all(np.all(np.asarray(w.kernel)[np.asarray(w.mask) == 0] == 0)
                for w in shared.layers if isinstance(w, rgp_keras.RegularGraphPruning))
    accuracy = shared.evaluate(x_test, y_test, verbose=0)[1]
    print(f"DataParallel over {len(devices)} devices ({devices[0].platform}): test accuracy {accuracy:.4f}, "
          f"masked weights zero: {zeros}")
    print(f"max |weight difference| to the single-device run: {difference:.2e}")


if __name__ == "__main__":
    main()
