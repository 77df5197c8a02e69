"""The paper's flow: train from scratch with a fixed RGP mask (density-aware initialisation).

An MLP on Fashion-MNIST; the untrained model is pruned, its kernels redrawn with
`rgp_keras.reinitialize` (fan-in counts only kept connections), then trained.

    python examples/train_from_scratch.py [--epochs 5] [--train-samples 60000]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import rgp_keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=60000)
    args = parser.parse_args()
    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    x_train = x_train[: args.train_samples].reshape(-1, 784).astype("float32") / 255
    y_train = y_train[: args.train_samples]
    x_test = x_test.reshape(-1, 784).astype("float32") / 255

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(256, activation="relu") for _ in range(3)]
                             + [keras.layers.Dense(10)])
    # keep 8/64 = 12.5 %; the weights are redrawn below, so no channel assignment
    pruned = rgp_keras.prune_regular_graph(model, degree=8, nodes=64, seed=0, assign_channels=False)
    rgp_keras.reinitialize(pruned, seed=0)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruned.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)
    print(rgp_keras.pruning_summary(pruned))
    print(
        f"test accuracy, trained from scratch at 87.5 % sparsity: {pruned.evaluate(x_test, y_test, verbose=0)[1]:.4f}"
    )


if __name__ == "__main__":
    main()
