"""One masked 3x3 convolution in LiteRT (1 thread): each compact layout against the grouped convolution alone.

The grouped convolution alone (groups = n over k/n of the channels, no channel picking) is the floor a compact
layer can reach; "gather" picks its inputs with GATHER between two TRANSPOSEs (outside XNNPACK), "slices" with
STRIDED_SLICE + CONCATENATION (in XNNPACK). Latency / the dense layer's, median of ROUNDS alternating rounds of
50-run medians. Writes results/slices_layout.md.

    python benchmarks/slices_layout.py
"""

import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import rgp_keras
from rgp_keras.export import compact_model
from rgp_keras.graph import RegularGraph, optimize

RESULTS = Path(__file__).parent / "results"
ROUNDS = 5
# (spatial size, channels, n, k): groups of channels / n
CASES = [(14, 128, 8, 2), (28, 256, 16, 4), (56, 64, 4, 2), (14, 128, 32, 4), (28, 64, 16, 4)]


def files(folder, size, channels, nodes, degree):
    inputs = keras.Input((size, size, channels), batch_size=1)
    dense = keras.Model(inputs, keras.layers.Conv2D(channels, 3, padding="same")(inputs))
    graph = optimize(RegularGraph.random(nodes, degree, seed=0), attempts=200, seed=0).graph
    stripped = rgp_keras.strip_pruning(rgp_keras.prune_regular_graph(dense, graph=graph, skip_first=False,
                                                                     skip_last=False))
    grouped_in = keras.Input((size, size, channels * degree), batch_size=1)
    models = {"dense": dense, "gather": compact_model(stripped, layout="gather")[0],
              "slices": compact_model(stripped, layout="slices")[0],
              "grouped alone": keras.Model(grouped_in, keras.layers.Conv2D(channels, 3, padding="same",
                                                                           groups=nodes)(grouped_in))}
    paths = {}
    for name, model in models.items():
        paths[name] = os.path.join(folder, f"{name.replace(' ', '_')}.tflite")
        model.export(paths[name], format="litert", verbose=False)
    return paths


def main():
    rows = []
    for size, channels, nodes, degree in CASES:
        with tempfile.TemporaryDirectory() as folder:
            paths = files(folder, size, channels, nodes, degree)
            times = {name: [] for name in paths}
            for _ in range(ROUNDS):
                for name, path in paths.items():
                    times[name].append(rgp_keras.benchmark_tflite(path, runs=50)["median_ms"])
        ratio = {name: statistics.median(values) / statistics.median(times["dense"]) for name, values in times.items()}
        floor = ratio["grouped alone"]
        rows.append(f"| {size}x{size}x{channels} | {nodes}/{degree} | {channels // nodes} | {floor:.3f} | "
                    f"{ratio['gather']:.3f} | {ratio['slices']:.3f} | {ratio['gather'] / floor:.2f}x | "
                    f"{ratio['slices'] / floor:.2f}x |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Compact layouts against the grouped convolution alone (`python benchmarks/slices_layout.py`)", "",
        "One 3x3 convolution (same padding, bias) masked by a minimum-ASPL n/k graph, LiteRT 1 thread, batch 1; "
        f"latency / the dense layer's, median of {ROUNDS} alternating rounds of 50-run medians. 'grouped alone': "
        "the grouped convolution the compact layouts run, on an input that already holds the picked channels "
        "(the floor). Issue 30's goal: within 1.1x of it where groups are >= 16 channels.", "",
        "| input | n/k | channels per group | grouped alone | gather | slices | gather / alone | slices / alone |",
        "|---|---|---|---|---|---|---|---|", *rows, ""])
    (RESULTS / "slices_layout.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
