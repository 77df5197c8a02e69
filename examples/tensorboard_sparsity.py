"""Log per-layer sparsity and graph statistics to TensorBoard while fine-tuning (Keras 3).

    python examples/tensorboard_sparsity.py --log-dir logs && tensorboard --logdir logs
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import rgp_keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=60000)
    args = parser.parse_args()
    (x_train, y_train), _ = rgp_keras.load_mnist()
    x_train = x_train[: args.train_samples].reshape(-1, 784).astype("float32") / 255
    y_train = y_train[: args.train_samples]

    model = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(128, activation="relu") for _ in range(3)]
                             + [keras.layers.Dense(10)])
    pruned = rgp_keras.prune_regular_graph(model, sparsity=0.75, nodes=16, seed=0)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruned.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2, callbacks=[
        keras.callbacks.TensorBoard(args.log_dir),            # loss and accuracy
        rgp_keras.RegularGraphSummaries(args.log_dir),       # sparsity per layer, graph n/k/ASPL/diameter
    ])
    print(f"TensorBoard logs in {args.log_dir}/ (run: tensorboard --logdir {args.log_dir})")


if __name__ == "__main__":
    main()
