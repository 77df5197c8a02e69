"""Does `compact_model` pick the right layout? Every prunable layer of the export benchmark's models, timed alone.

For the VGG-style net and MobileNetV2 of benchmarks/export_bench.py and an MLP
784-512x3-10 on vectors (the tradeoff benchmark's; its Dense layers run at one
position per call), pruned at n = 16 (k = 2, 4) and n = 64 (k = 4, 8, 16), and
the MLP also at n = 32 (k = 2, 4, 8), each distinct masked layer
(input shape, kernel, strides) is converted alone to .tflite three ways (Dense layers four):
dense (the masked kernel as it is: what a sparse file computes), compact
"gather" and compact "scatter" (forced with `compact_model(layout=...)`),
and, for Dense layers, sparse-encoded (`export_tflite(compact=False)`: the
converter's sparsity encoding, which LiteRT runs on its block-sparse
FULLY_CONNECTED kernel; convolutions are densified at load), and timed in
LiteRT (1 thread, or --threads N): each layout's ratio to dense
is export_bench's `ratio`, the median over alternating rounds of medians of
30 invocations after warm-up. Beside each measured ratio stands
`estimated_latency_ratios`'s estimate for that thread count, and the layout
`compact_model(threads=N)` picks with layout="auto" (or dense, when no
layout is estimated below 0.9x).

A layer alone runs in one XNNPACK partition or none; inside a model, a
sparse-encoded Dense layer also splits the model's XNNPACK partition. So the
MLP is also timed whole, pruned at every n/k: sparse-encoded
(`export_tflite(compact=False)`) and `export_tflite()` (compact=True), each
against the dense file.

The summary weighs each layer by how often its shape occurs in the model:
time of auto's picks vs the fastest of the three per layer (the oracle)
vs all dense; with --threads N > 1 also the time of the picks made for one
thread.

Writes benchmarks/results/layout_choice.md and layout_choice.csv
(layout_choice_2threads.md/.csv with --threads 2).

    python benchmarks/layout_choice.py              # about 3 minutes
    python benchmarks/layout_choice.py --threads 2  # about 2 minutes
"""

import argparse
import csv
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).parent))
from export_bench import MODELS, ROUNDS, ratio  # noqa: E402

from rgp_keras import export_tflite, prune_regular_graph, strip_pruning  # noqa: E402
from rgp_keras.export import channel_blocks, compact_model, estimated_latency_ratios  # noqa: E402
from rgp_keras.masking.masks import prunable_kernel  # noqa: E402
from rgp_keras.model_walk import clone_layer, to_numpy  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CASES = ((16, 4), (16, 2), (64, 16), (64, 8), (64, 4))
RUNS = 30


def mlp():
    return keras.Sequential([keras.Input((784,)), *(keras.layers.Dense(512, activation="relu") for _ in range(3)),
                             keras.layers.Dense(10)])


LAYER_MODELS = {**MODELS, "MLP 784-512x3": mlp}
EXTRA_CASES = {"MLP 784-512x3": ((32, 8), (32, 4), (32, 2))}


def masked_layers(model):
    """`{signature: (layer, input shape, count)}` for the distinct masked layers of a stripped model."""
    found, counts = {}, Counter()
    for layer in model.layers:
        if not (layer.count_params() and prunable_kernel(layer)[0]):
            continue
        kernel = to_numpy(layer.kernel)
        if channel_blocks(kernel) is None:
            continue
        shape = tuple(layer.input.shape[1:])
        key = (shape, tuple(kernel.shape), tuple(getattr(layer, "strides", ())))
        counts[key] += 1
        found.setdefault(key, (layer, shape))
    return {key: (*value, counts[key]) for key, value in found.items()}


def alone(layer, shape):
    clone = clone_layer(layer)
    single = keras.Sequential([keras.Input(shape, batch_size=1), clone])
    clone.set_weights(layer.get_weights())
    return single


def converted(model, path):
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def describe(layer, shape):
    window = "x".join(map(str, layer.kernel.shape[:-2]))
    stride = f"/{layer.strides[0]}" if getattr(layer, "strides", (1,))[0] > 1 else ""
    spatial = "x".join(map(str, shape[:-1])) or "1"
    return f"{spatial} {layer.kernel.shape[-2]}->{layer.kernel.shape[-1]} {window}{stride}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="LiteRT CPU threads (default 1)")
    threads = parser.parse_args().threads
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        for model_name, builder in LAYER_MODELS.items():
            keras.utils.set_random_seed(0)
            model = builder()
            for nodes, degree in CASES + EXTRA_CASES.get(model_name, ()):
                stripped = strip_pruning(prune_regular_graph(model, degree=degree, nodes=nodes, seed=0))
                for (shape, _, _), (layer, _, count) in masked_layers(stripped).items():
                    single = alone(layer, shape)
                    blocks = channel_blocks(to_numpy(layer.kernel))
                    estimates = estimated_latency_ratios(layer, blocks, threads)
                    dense = converted(single, directory / "dense.tflite")
                    row = {"model": model_name, "nodes": nodes, "degree": degree, "layer": describe(layer, shape),
                           "count": count}
                    for layout in ("gather", "scatter"):
                        if layout in estimates:
                            compact = converted(compact_model(single, layout=layout)[0], directory / f"{layout}.tflite")
                            row[layout], row["dense_ms"] = ratio(compact, dense, threads, RUNS)
                            row[f"{layout}_estimate"] = estimates[layout]
                    if "Dense" in type(layer).__name__:
                        sparse = directory / "sparse.tflite"
                        export_tflite(single, sparse, compact=False)
                        row["sparse"] = ratio(sparse, dense, threads, RUNS)[0]
                    row["auto"] = compact_model(single, threads=threads)[1].get(layer.name, "dense")
                    row["auto_one_thread"] = compact_model(single)[1].get(layer.name, "dense")
                    measured = {"dense": 1.0, **{name: row[name] for name in ("gather", "scatter") if name in row}}
                    row["fastest"] = min(measured, key=measured.get)
                    rows.append(row)
                    print(row, flush=True)
        whole = whole_mlp(directory, threads)
    write(rows, whole, threads)


def whole_mlp(directory, threads):
    """[(nodes, degree, sparse-encoded / dense, compact / dense)] for the whole MLP, exported as users do."""
    keras.utils.set_random_seed(0)
    model, dense = mlp(), directory / "dense.tflite"
    export_tflite(model, dense, compact=False)
    rows = []
    for nodes, degree in CASES + EXTRA_CASES["MLP 784-512x3"]:
        pruned = prune_regular_graph(model, degree=degree, nodes=nodes, seed=0)
        sparse, compact = directory / "sparse.tflite", directory / "compact.tflite"
        export_tflite(pruned, sparse, compact=False)
        export_tflite(pruned, compact, threads=threads)
        rows.append((nodes, degree, ratio(sparse, dense, threads, RUNS)[0], ratio(compact, dense, threads, RUNS)[0]))
        print(rows[-1], flush=True)
    return rows


def write(rows, whole, threads):
    RESULTS.mkdir(exist_ok=True)
    name = "layout_choice" if threads == 1 else f"layout_choice_{threads}threads"
    fields = ["model", "nodes", "degree", "layer", "count", "dense_ms", "gather", "gather_estimate", "scatter",
              "scatter_estimate", "sparse", "auto", "auto_one_thread", "fastest"]
    with open(RESULTS / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)

    def cell(row, layout):
        return f"{row[layout]:.3f} ({row[layout + '_estimate']:.2f})" if layout in row else "–"

    def sparse_cell(row):
        return f"{row['sparse']:.3f}" if "sparse" in row else "–"

    def time_of(row, choice):
        return row["count"] * row["dense_ms"] * (1.0 if choice == "dense" else row[choice])

    lines = [
        "# Compact layout choice, layer by layer",
        "",
        f"`python benchmarks/layout_choice.py{f' --threads {threads}' if threads > 1 else ''}` — each distinct "
        f"masked layer alone, LiteRT {threads} thread(s); latency / dense latency of the same layer (median over "
        f"{ROUNDS} alternating rounds of medians of {RUNS} invocations), the estimate in parentheses. `auto` is what "
        f"`export_tflite(threads={threads})` picks; `fastest` what was measured fastest among dense, gather and "
        "scatter; `sparse`: Dense layers sparse-encoded (`export_tflite(compact=False)`), never picked by "
        "`compact=True`.",
        "",
        "| model | n/k | picks as fast as the fastest (layers) | time of auto's picks / fastest | / all dense |"
        + (" time of one-thread picks / fastest |" if threads > 1 else ""),
        "|---|---|---|---|---|" + ("---|" if threads > 1 else ""),
    ]
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["nodes"], row["degree"]), []).append(row)
    worst = 1.0
    for (model, nodes, degree), members in groups.items():
        fastest = sum(time_of(row, row["fastest"]) for row in members)
        auto = sum(time_of(row, row["auto"]) for row in members)
        dense = sum(time_of(row, "dense") for row in members)
        hits = sum(row["count"] for row in members if row["auto"] == row["fastest"])
        worst = max(worst, auto / fastest)
        one_thread = sum(time_of(row, row["auto_one_thread"]) for row in members)
        lines.append(f"| {model} | {nodes}/{degree} | {hits} of {sum(row['count'] for row in members)} | "
                     f"{auto / fastest:.3f} | {auto / dense:.3f} |"
                     + (f" {one_thread / fastest:.3f} |" if threads > 1 else ""))
    hits = sum(row["count"] for row in rows if row["auto"] == row["fastest"])
    lines += ["", f"In all: auto picks the fastest for {hits} of {sum(row['count'] for row in rows)} layers; "
                  f"its picks take at most {100 * (worst - 1):.1f} % longer than the fastest (per model and n/k)."]
    lines += ["", "The whole MLP 784-512x3-10 (its two 512 -> 512 layers masked), latency / dense file:", "",
              "| n/k | sparsity | sparse-encoded (compact=False) | export_tflite() (compact=True) |",
              "|---|---|---|---|"]
    lines += [
        f"| {nodes}/{degree} | {100 * (1 - degree / nodes):g} % | {sparse:.3f} | {compact:.3f} |"
        for nodes, degree, sparse, compact in whole
    ]
    lines += [
        "",
        "| model | n/k | layer (HxW Cin->Cout window/stride) | x | dense ms | gather | scatter | sparse | "
        "auto | "
        "fastest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['nodes']}/{row['degree']} | {row['layer']} | {row['count']} | "
            f"{row['dense_ms']:.3f} | {cell(row, 'gather')} | {cell(row, 'scatter')} | "
            f"{sparse_cell(row)} | {row['auto']} | "
            f"{row['fastest']} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / f'{name}.md'}")


if __name__ == "__main__":
    main()
