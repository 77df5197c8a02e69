"""Multi-worker fine-tuning of an RGP model with tf.distribute.MultiWorkerMirroredStrategy.

Run without arguments, the script starts two local workers on loopback (each
gets its own TF_CONFIG, as on a real cluster) and waits for them. Both load
the same graph file, so every worker builds identical masks; gradients are
all-reduced and the masked weights stay exactly zero on every worker. The
training step is a short custom loop because Keras 3's `fit` does not run
under this strategy yet (keras-team/keras#20585); with tf_keras, the TF-MOT
path (`examples/tfmot_workflow.py`) trains with `fit` as usual.

    python examples/multi_worker.py [--train-samples 60000] [--epochs 1]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

from rgp_keras.model_walk import to_numpy

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(args):
    from rgp_keras.graph import RegularGraph, optimize

    graph_file = os.path.join(tempfile.mkdtemp(prefix="rgp-multi-worker-"), "graph.npz")
    optimize(RegularGraph.random(32, 4, seed=0), seed=0).graph.save(graph_file)
    ports = free_ports(2)
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }))
        command = [sys.executable, __file__, "--worker", "--graph", graph_file,
                   "--train-samples", str(args.train_samples), "--epochs", str(args.epochs)]
        workers.append(subprocess.Popen(command, env=env))
    codes = [worker.wait(timeout=900) for worker in workers]
    if any(codes):
        sys.exit(f"a worker failed (exit codes {codes})")


def work(args):
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG; before any other TF work
    import keras

    import rgp_keras

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    (x_train, y_train), (x_test, y_test) = rgp_keras.load_mnist()
    x_train = x_train[: args.train_samples].reshape(-1, 784).astype("float32") / 255
    x_test = x_test.reshape(-1, 784).astype("float32") / 255
    dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train[: args.train_samples])).shuffle(
        10000, seed=0).batch(64 * strategy.num_replicas_in_sync, drop_remainder=True)
    with strategy.scope():
        keras.utils.set_random_seed(0)  # same initial weights on every worker
        model = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(256, activation="relu")
                                                          for _ in range(3)] + [keras.layers.Dense(10)])
        pruned = rgp_keras.prune_regular_graph(model, graph=args.graph)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(pruned.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    global_batch = 64 * strategy.num_replicas_in_sync

    # Keras 3's model.fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so the step is written out: each replica computes its gradients, the optimizer all-reduces them.
    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, pruned(x, training=True)) / global_batch
            gradients = tape.gradient(loss, pruned.trainable_variables)
            optimizer.apply_gradients(zip(gradients, pruned.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=(x, y)), axis=None)

    for epoch in range(args.epochs):
        losses = [float(train_step(x, y)) for x, y in strategy.experimental_distribute_dataset(dataset)]
        if task == 0:
            print(f"epoch {epoch + 1}: mean loss {np.mean(losses):.4f} over {len(losses)} steps", flush=True)
    zeros = all(np.all(to_numpy(w.kernel)[to_numpy(w.mask) == 0] == 0)
                for w in pruned.layers if isinstance(w, rgp_keras.RegularGraphPruning))
    accuracy = np.mean(np.argmax(to_numpy(pruned(x_test)), axis=-1) == y_test)
    print(f"worker {task} of {strategy.num_replicas_in_sync}: test accuracy {accuracy:.4f}, "
          f"masked weights zero: {zeros}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work(args) if args.worker else launch(args)


if __name__ == "__main__":
    main()
