"""LiteRT export benchmark: compact RGP kernels vs dense vs TF-MOT magnitude pruning.

For a VGG-style net (32x32x3, 64..512 channels) and MobileNetV2 (224x224x3,
weights=None), at n = 64 and n = 16 with k for 75 %, 87.5 % and 93.75 %
sparsity: .tflite size (raw and gzipped) and LiteRT latency ratios against the
dense model with 1 and 2 threads; compact files are also exported for two
threads (`export_tflite(threads=2)`) and timed with two. Each ratio is
measured side by side in one run (dense timed right before the variant,
medians of `--runs` invocations after warm-up, median over ROUNDS
alternating rounds). TF-MOT runs in a subprocess (tf_keras): prune_low_magnitude
with ConstantSparsity, masks applied by UpdatePruningStep, strip_pruning,
converter sparsity encoding. Weights are random (size and latency do not
depend on training); int8 is calibrated on real Fashion-MNIST images.

Writes benchmarks/results/export.md and export.csv.

    python benchmarks/export_bench.py            # full (about 15 minutes on 2 cores)
    python benchmarks/export_bench.py --quick    # VGG only, n = 16, fewer runs
"""

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from rgp_keras import benchmark_tflite, export_tflite, prune_regular_graph, pruning_summary
from rgp_keras.datasets import load_fashion_mnist

RESULTS = Path(__file__).parent / "results"
SPARSITIES = (0.75, 0.875, 0.9375)


def vgg():
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for width in (64, 128, 256, 512):
        for _ in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="vgg")


def mobilenet():
    return keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)


MODELS = {"VGG-style 32x32": vgg, "MobileNetV2 224x224": mobilenet}


def calibration(shape):
    (_, _), (x_test, _) = load_fashion_mnist()
    import tensorflow as tf

    images = tf.image.resize(x_test[:100, ..., None].astype("float32") / 255.0, shape[:2]).numpy()
    return np.repeat(images, shape[2], axis=-1)


def tfmot_export(builder, sparsity, path):
    """TF-MOT magnitude pruning of the same architecture in tf_keras, in a subprocess."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np, tensorflow as tf, tf_keras as K, tensorflow_model_optimization as tfmot
        name = {builder!r}
        if name == "vgg":
            inputs = K.Input((32, 32, 3)); x = inputs
            for width in (64, 128, 256, 512):
                for _ in range(2):
                    x = K.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
                    x = K.layers.BatchNormalization()(x); x = K.layers.ReLU()(x)
                x = K.layers.MaxPooling2D()(x)
            x = K.layers.GlobalAveragePooling2D()(x)
            model = K.Model(inputs, K.layers.Dense(10)(x))
        else:
            model = K.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)
        schedule = tfmot.sparsity.keras.ConstantSparsity({sparsity}, begin_step=0, frequency=1)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        pruned.compile("sgd", "mse")
        shape = (1,) + tuple(model.input_shape[1:])
        pruned.fit(np.zeros(shape, "float32"), np.zeros((1,) + tuple(model.output_shape[1:]), "float32"),
                   epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        open({str(path)!r}, "wb").write(converter.convert())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"TF-MOT export failed:\n{done.stderr[-3000:]}")


ROUNDS = 9


def ratio(variant, dense, threads, runs):
    """Median over `ROUNDS` alternating rounds of (variant median / dense median), and the dense median."""
    ratios, bases = [], []
    for _ in range(ROUNDS):
        bases.append(benchmark_tflite(dense, threads=threads, runs=runs)["median_ms"])
        ratios.append(benchmark_tflite(variant, threads=threads, runs=runs)["median_ms"] / bases[-1])
    return float(np.median(ratios)), float(np.median(bases))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="VGG only, n = 16, 10 runs (smoke run)")
    parser.add_argument("--runs", type=int, default=30, help="timed invocations per latency (default 30)")
    args = parser.parse_args()
    runs = 10 if args.quick else args.runs
    models = {"VGG-style 32x32": vgg} if args.quick else MODELS
    node_counts = (16,) if args.quick else (64, 16)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="rgp-export-bench-"))
    for model_name, builder in models.items():
        keras.utils.set_random_seed(0)
        model = builder()
        samples = calibration(model.inputs[0].shape[1:])
        dense = {q: export_tflite(model, tmp / f"dense-{q}.tflite", compact=False, quantize=q,
                                  representative_data=samples if q else None) for q in (None, "int8")}

        def record(method, nodes, degree, sparsity, path, quantize=None, kept_share=None, mac_share=None,
                   for_two=None):
            size, gzipped = file_sizes(path)
            row = {"model": model_name, "method": method, "nodes": nodes, "degree": degree,
                   "sparsity": sparsity, "quantize": quantize or "float32", "size_kb": size / 1024,
                   "gzip_kb": gzipped / 1024, "size_vs_dense": size / dense[quantize].size_bytes,
                   "kept_share": kept_share, "mac_share": mac_share}
            for threads in (1, 2):
                timed = ratio(path, dense[quantize].path, threads, runs)
                row[f"latency_{threads}t"], row[f"dense_ms_{threads}t"] = timed
            row["latency_2t_for_two"] = ratio(for_two, dense[quantize].path, 2, runs)[0] if for_two else None
            rows.append(row)
            print(json.dumps(row), flush=True)

        record("dense", "", "", 0.0, dense[None].path)
        record("dense", "", "", 0.0, dense["int8"].path, quantize="int8")
        for sparsity in SPARSITIES:
            for nodes in node_counts:
                degree = round(nodes * (1 - sparsity))
                if degree < 2:  # k = 1 is no connected graph (n = 16 at 93.75 %)
                    continue
                pruned = prune_regular_graph(model, degree=degree, nodes=nodes, seed=0)
                # kept-weight share of the whole model (dense layers included)
                totals = pruning_summary(pruned).totals
                share = totals["kept_params"] / totals["params"]
                compact, for_two = (
                    export_tflite(pruned, tmp / f"c-{nodes}-{degree}-{threads}.tflite", threads=threads)
                    for threads in (1, 2))
                record("RGP compact", nodes, degree, sparsity, compact.path, kept_share=share,
                       mac_share=compact.macs / compact.dense_macs, for_two=for_two.path)
                sparse = export_tflite(pruned, tmp / f"s-{nodes}-{degree}.tflite", compact=False)
                record("RGP sparse", nodes, degree, sparsity, sparse.path, kept_share=share)
                int8, int8_for_two = (
                    export_tflite(pruned, tmp / f"c8-{nodes}-{degree}-{threads}.tflite", quantize="int8",
                                  representative_data=samples, threads=threads) for threads in (1, 2))
                record("RGP compact", nodes, degree, sparsity, int8.path, quantize="int8", kept_share=share,
                       for_two=int8_for_two.path)
            peer = tmp / f"tfmot-{sparsity}.tflite"
            tfmot_export("vgg" if builder is vgg else "mobilenet", sparsity, peer)
            record("TF-MOT magnitude", "", "", sparsity, peer)
    write(rows, runs)


def file_sizes(path):
    data = Path(path).read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9))


def write(rows, runs):
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "export.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# LiteRT export: size and latency",
        "",
        f"`python benchmarks/export_bench.py` — LiteRT {_litert_version()} with XNNPACK, this machine's CPU, "
        f"median of {runs} single-sample invocations after warm-up; every latency is the median over {ROUNDS} "
        "alternating rounds of its ratio to the dense model's file of the same precision timed right before it. "
        "Weights random (size and latency do not depend on them); int8 calibrated on Fashion-MNIST images. "
        "\"kept share\": kept fraction of the whole model's weights; \"MACs\": the compact file's MACs / dense "
        "(layers left dense included). \"2 threads, exported for 2\": the compact file written with "
        "`export_tflite(threads=2)`, timed with 2 threads.",
        "",
        "n = 16 at 93.75 % would need k = 1 (no connected graph) and is left out.",
        "",
        "Goals (compact float32): size <= 1.05 x kept-weight share; latency <= 2 x (k/n) at k/n <= 1/4, one thread "
        "(stretch 1.5 x); int8 compact faster than int8 dense.",
        "",
    ]
    for model in dict.fromkeys(row["model"] for row in rows):
        lines += [f"## {model}", "",
                  "| method | n/k | sparsity | precision | size KB (gzip) | size / dense | kept share | MACs | "
                  "latency / dense, 1 thread | 2 threads | 2 threads, exported for 2 | size goal | latency goal |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in (r for r in rows if r["model"] == model):
            size_goal = latency_goal = ""
            if row["method"] == "RGP compact" and row["quantize"] == "float32":
                size_goal = "met" if row["size_vs_dense"] <= 1.05 * row["kept_share"] else "not met"
                density = row["degree"] / row["nodes"]
                latency_goal = ("met" if row["latency_1t"] <= 2 * density else "not met") + (
                    ", stretch met" if row["latency_1t"] <= 1.5 * density else "")
            if row["method"] == "RGP compact" and row["quantize"] == "int8":
                latency_goal = "faster than int8 dense" if row["latency_1t"] < 1 else "not faster"
            graph = f"{row['nodes']}/{row['degree']}" if row["nodes"] else "–"
            share, macs, for_two = (f"{row[key]:.3f}" if row[key] is not None else "–"
                                    for key in ("kept_share", "mac_share", "latency_2t_for_two"))
            lines.append(
                f"| {row['method']} | {graph} | {100 * row['sparsity']:.2f}% | {row['quantize']} | "
                f"{row['size_kb']:.0f} ({row['gzip_kb']:.0f}) | {row['size_vs_dense']:.3f} | {share} | {macs} | "
                f"{row['latency_1t']:.3f} | {row['latency_2t']:.3f} | {for_two} | {size_goal} | {latency_goal} |"
            )
        dense_ms = next(r for r in rows if r["model"] == model and r["method"] == "dense")
        lines += ["", f"Dense float32 latency: {dense_ms['dense_ms_1t']:.2f} ms (1 thread), "
                      f"{dense_ms['dense_ms_2t']:.2f} ms (2 threads).", ""]
    (RESULTS / "export.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _litert_version():
    from importlib.metadata import version

    return version("ai-edge-litert")


if __name__ == "__main__":
    main()
