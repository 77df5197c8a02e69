"""Quickstart (Keras 3): prune a trained CNN with RGP and calibration data, fine-tune, strip, export to LiteRT.

    python examples/quickstart.py [--train-samples 60000] [--test-samples 10000] [--epochs 1]
"""

import argparse
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import rgp_keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--test-samples", type=int, default=10000, help="test images evaluated (smoke runs: fewer)")
    parser.add_argument("--out", default="quickstart.tflite")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    x_train = x_train[: args.train_samples, ..., None].astype("float32") / 255
    y_train = y_train[: args.train_samples]
    x_test = x_test[: args.test_samples, ..., None].astype("float32") / 255
    y_test = y_test[: args.test_samples]

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(128, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)

    # One 4-regular graph on 32 nodes, optimised for minimum ASPL, masks every middle layer (keep 4/32).
    # 512 unlabelled training images let the kept weights be refit to reproduce the dense model.
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), 512, replace=False)]
    pruned = rgp_keras.prune_regular_graph(model, sparsity=0.875, nodes=32, seed=0, calibration_data=calibration)
    print(rgp_keras.pruning_summary(pruned))
    # fine-tuning as the README recommends for conv nets: Adam, cosine decay from 8e-3 over the epoch(s)
    steps = math.ceil(len(x_train) / 128) * args.epochs
    pruned.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(8e-3, steps)), loss,
                   metrics=["accuracy"])
    one_shot = pruned.evaluate(x_test, y_test, verbose=0)[1]
    pruned.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)

    stripped = rgp_keras.strip_pruning(pruned)  # plain Keras layers, masked weights exactly zero
    report = rgp_keras.export_tflite(stripped, args.out)
    print(report)
    litert = np.mean(rgp_keras.run_tflite(args.out, x_test).argmax(-1) == y_test)
    print(f"accuracy: dense {model.evaluate(x_test, y_test, verbose=0)[1]:.4f}, RGP one-shot {one_shot:.4f}, "
          f"RGP {pruned.evaluate(x_test, y_test, verbose=0)[1]:.4f}, RGP LiteRT {litert:.4f}")


if __name__ == "__main__":
    main()
