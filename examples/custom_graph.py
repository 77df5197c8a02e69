"""One graph file from `rgp graph`, reused across models: same masks, reproducible, no re-optimisation.

    rgp graph --nodes 32 --degree 4 --seed 0 --time-limit 5 --out graph.npz
    python examples/custom_graph.py graph.npz
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import rgp_keras
from rgp_keras.graph import RegularGraph


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="graph file written by `rgp graph`")
    args = parser.parse_args()
    graph = RegularGraph.load(args.graph)
    print(f"graph: n={graph.nodes}, k={graph.degree}, ASPL {graph.aspl:.4f} (Moore bound {graph.moore_bound:.4f})")

    mlp = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256), keras.layers.Dense(256),
                            keras.layers.Dense(256), keras.layers.Dense(10)])
    cnn = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(64, 3), keras.layers.Conv2D(128, 3),
                            keras.layers.Conv2D(128, 3), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    for model in (mlp, cnn):
        pruned = rgp_keras.prune_regular_graph(model, graph=args.graph)  # a path or a RegularGraph
        totals = rgp_keras.pruning_summary(pruned).totals
        print(f"{model.name}: kept {totals['kept_params']:,} of {totals['params']:,} parameters "
              f"({100 * totals['sparsity']:.1f} % pruned), MACs -{100 * totals['mac_reduction']:.1f} %")


if __name__ == "__main__":
    main()
