"""The main job (`make demo`): prune a small CNN on real MNIST with RGP, fine-tune, export to LiteRT.

Steps: load MNIST (installed by `make data`), train a small CNN (or reuse the
one cached in demo-output/ from an earlier run), optimise a 32-node 4-regular
graph for minimum ASPL, prune every middle layer to 87.5 % with 1,024 unlabelled
calibration images (channel assignment + least-squares reconstruction: most of
the accuracy is kept before any training), fine-tune with plain `model.fit`,
export sparse and compact .tflite files, run them on the 10,000 test images
with the LiteRT interpreter, and print one table.

    python examples/demo.py [--epochs 2] [--fine-tune-epochs 1] [--train-samples 12000] [--out demo-output]
                            [--calibration-samples 1024] [--test-samples 10000]
"""

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import rgp_keras
from rgp_keras.graph import RegularGraph, optimize
from rgp_keras.plots import plot_aspl_history, plot_layer_sparsity

NODES, DEGREE = 32, 4  # keep 4/32: 87.5 % of each pruned layer's weights removed
CALIBRATION = 1024  # unlabelled training images for data-aware pruning (>= the 785 weights per output group)


def small_cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(128, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(128, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(128, 3, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dense(10),
        ],
        name="mnist_cnn",
    )


def compile_for_training(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="dense training epochs (skipped when cached)")
    parser.add_argument("--fine-tune-epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    # 12k of MNIST's 60k training images: the whole story, install included, in under 6 min on 2 cores
    parser.add_argument("--train-samples", type=int, default=12000, help="training images used (all: 60000)")
    parser.add_argument("--calibration-samples", type=int, default=CALIBRATION,
                        help="unlabelled training images for data-aware pruning (smoke runs: fewer)")
    parser.add_argument("--test-samples", type=int, default=10000, help="test images evaluated (smoke runs: fewer)")
    parser.add_argument("--out", default="demo-output", help="folder for models, .tflite files and plots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)

    (x_train, y_train), (x_test, y_test) = rgp_keras.load_mnist()
    x_train = (x_train[: args.train_samples, ..., None] / 255.0).astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = (x_test[: args.test_samples, ..., None] / 255.0).astype("float32")
    y_test = y_test[: args.test_samples]

    cached = out / f"dense-{args.train_samples}-{args.epochs}.keras"
    if cached.exists():
        print(f"[1/5] Reusing the trained dense CNN from {cached}")
        dense = keras.saving.load_model(cached)
    else:
        print(f"[1/5] Training the dense CNN ({args.epochs} epochs on {len(x_train):,} MNIST images)")
        dense = compile_for_training(small_cnn(), 1e-3)
        dense.fit(x_train, y_train, epochs=args.epochs, batch_size=128, validation_split=0.05)
        dense.save(cached)
    compile_for_training(dense, 1e-3)

    print(f"[2/5] Optimising a {NODES}-node {DEGREE}-regular graph for minimum ASPL")
    result = optimize(RegularGraph.random(NODES, DEGREE, seed=0), seed=0, progress=True)
    graph = result.graph
    print(f"      ASPL {result.history['aspl'][0]:.4f} -> {graph.aspl:.4f} (Moore bound {graph.moore_bound:.4f})")
    plot_aspl_history({f"n={NODES}, k={DEGREE}": result.history}, out / "aspl_history.png",
                      moore_bound=graph.moore_bound)

    print(f"[3/5] Pruning to {100 * graph.sparsity:.1f} % with {args.calibration_samples} calibration images, "
          f"then fine-tuning ({args.fine_tune_epochs} epochs)")
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), args.calibration_samples, replace=False)]
    blind = rgp_keras.prune_regular_graph(dense, graph=graph, assign_channels=False)  # the paper's one-shot mask
    one_shot_blind = compile_for_training(blind, 1e-3).evaluate(x_test, y_test, verbose=0)[1]
    start = time.perf_counter()
    pruned = rgp_keras.prune_regular_graph(dense, graph=graph, calibration_data=calibration)
    prune_seconds = time.perf_counter() - start
    # the README's fine-tuning recommendation for conv nets: Adam, cosine decay from 8e-3 over the epochs
    steps = math.ceil(0.95 * len(x_train) / 128) * args.fine_tune_epochs
    compile_for_training(pruned, keras.optimizers.schedules.CosineDecay(8e-3, steps))
    summary = rgp_keras.pruning_summary(pruned)
    print(summary)
    plot_layer_sparsity(summary, out / "layer_sparsity.png", title=f"RGP n={NODES}, k={DEGREE}")
    one_shot = {"data-aware": pruned.evaluate(x_test, y_test, verbose=0)[1], "blind": one_shot_blind,
                "seconds": prune_seconds}
    pruned.fit(x_train, y_train, epochs=args.fine_tune_epochs, batch_size=128, validation_split=0.05)

    print("[4/5] Exporting dense, sparse and compact .tflite files")
    reports = {
        "dense": rgp_keras.export_tflite(dense, out / "dense.tflite", compact=False),
        "sparse": rgp_keras.export_tflite(pruned, out / "sparse.tflite", compact=False),
        "compact": rgp_keras.export_tflite(pruned, out / "compact.tflite"),
    }
    print(reports["compact"])

    print(f"[5/5] Running the .tflite files with the LiteRT interpreter on {len(x_test):,} test images")
    accuracy = {"dense": dense.evaluate(x_test, y_test, verbose=0)[1],
                "pruned": pruned.evaluate(x_test, y_test, verbose=0)[1]}
    for name, report in reports.items():
        accuracy[f"{name} LiteRT"] = float(np.mean(rgp_keras.run_tflite(report.path, x_test).argmax(-1) == y_test))
    latency = {name: rgp_keras.benchmark_tflite(report.path, threads=1, runs=100)["median_ms"]
               for name, report in reports.items()}
    print_table(accuracy, one_shot, reports, latency)
    print(f"\nFiles and plots in {out}/: dense.tflite, sparse.tflite, compact.tflite, aspl_history.png, "
          "layer_sparsity.png")


def print_table(accuracy, one_shot, reports, latency):
    dense = reports["dense"]
    rows = [("", "dense", "RGP sparse", "RGP compact")]
    rows.append(("accuracy, Keras", f"{100 * accuracy['dense']:.2f} %", f"{100 * accuracy['pruned']:.2f} %", ""))
    rows.append(("one-shot, no training", "", f"{100 * one_shot['data-aware']:.2f} % ({one_shot['seconds']:.1f} s)",
                 f"(plain RGP, no data: {100 * one_shot['blind']:.2f} %)"))
    rows.append(("accuracy, LiteRT", *(f"{100 * accuracy[f'{n} LiteRT']:.2f} %" for n in reports)))
    rows.append(("parameters", *(f"{r.params:,} ({r.params / dense.params:.3f}x)" for r in reports.values())))
    rows.append(("non-zero parameters",
                 *(f"{r.nonzero_params:,} ({r.nonzero_params / dense.params:.3f}x)" for r in reports.values())))
    rows.append(("MACs per image", *(f"{r.macs:,} ({r.macs / dense.macs:.3f}x)" for r in reports.values())))
    rows.append(("file size", *(f"{r.size_bytes / 1024:,.0f} KB ({r.size_bytes / dense.size_bytes:.3f}x)"
                                for r in reports.values())))
    rows.append(("gzipped", *(f"{r.gzip_bytes / 1024:,.0f} KB ({r.gzip_bytes / dense.gzip_bytes:.3f}x)"
                              for r in reports.values())))
    rows.append(("latency, 1 thread", *(f"{latency[n]:.3f} ms ({latency[n] / latency['dense']:.3f}x)"
                                        for n in reports)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")
