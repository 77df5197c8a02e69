"""Why compact export gathers the way it does: one masked 3x3 conv, three gather layouts.

Each VGG-style layer shape (H x H x C -> C, same padding) at n = 16 groups and
k = 2 and 4 is converted to .tflite four ways and timed in LiteRT (1 thread,
median of 50 invocations after warm-up, ratios to the dense conv of the same
run):

- dense: the ordinary conv (what a sparse file computes);
- transpose: channels to the front, GATHER whole planes, transpose back,
  grouped conv (what `export_tflite(compact=True)` emits);
- group axis: reshape to (H*W, n, C/n), GATHER groups, grouped conv;
- slices: one slice per (output group, neighbour) and a CONCATENATION;
- no gather: the grouped conv alone, on an input already k C channels wide
  (the floor any gather layout could reach).

The neighbour pattern is circulant (group i reads groups i .. i+k-1): the
timing depends on the shapes only.

Writes benchmarks/results/gather_layouts.md.

    python benchmarks/gather_layouts.py     # about 2 minutes
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from rgp_keras import benchmark_tflite
from rgp_keras.export._kernels import take_channels  # what export_tflite's gather layout emits

RESULTS = Path(__file__).parent / "results"
SHAPES = ((32, 64), (16, 128), (8, 256), (4, 512))
VARIANTS = ("transpose", "group axis", "slices", "no gather")


def gathered(inputs, size, channels, nodes, degree, variant):
    group = channels // nodes
    neighbours = np.stack([(np.arange(nodes) + s) % nodes for s in range(degree)], axis=1).reshape(-1)
    if variant == "transpose":
        return take_channels(inputs, (neighbours[:, None] * group + np.arange(group)).reshape(-1))
    if variant == "group axis":
        x = keras.ops.reshape(inputs, (1, size * size, nodes, group))
        x = keras.ops.take(x, neighbours, axis=2)
        return keras.ops.reshape(x, (1, size, size, len(neighbours) * group))
    return keras.ops.concatenate([inputs[..., j * group : (j + 1) * group] for j in neighbours], axis=-1)


def latency(size, channels, nodes, degree, variant, directory):
    width = channels * degree if variant == "no gather" else channels
    inputs = keras.Input((size, size, width), batch_size=1)
    if variant == "no gather":
        outputs = keras.layers.Conv2D(channels, 3, padding="same", groups=nodes)(inputs)
    elif variant == "dense":
        outputs = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
    else:
        x = gathered(inputs, size, channels, nodes, degree, variant)
        outputs = keras.layers.Conv2D(channels, 3, padding="same", groups=nodes)(x)
    path = Path(directory) / f"{variant}.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert())
    return benchmark_tflite(path, threads=1, runs=50)["median_ms"]


def main():
    nodes = 16
    rows = [
        f"| H x H x C | n/k | kept share | dense (ms) | {' | '.join(v + ' / dense' for v in VARIANTS)} |",
        "|---|---|---|---|" + "---|" * len(VARIANTS),
    ]
    with tempfile.TemporaryDirectory() as directory:
        for size, channels in SHAPES:
            for degree in (2, 4):
                dense = latency(size, channels, nodes, degree, "dense", directory)
                ratios = [latency(size, channels, nodes, degree, v, directory) / dense for v in VARIANTS]
                rows.append(
                    f"| {size}x{size}x{channels} | {nodes}/{degree} | {degree / nodes:.3f} | {dense:.3f} | "
                    + " | ".join(f"{r:.3f}" for r in ratios) + " |"
                )
                print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# Gather layouts for compact kernels",
            "",
            "`python benchmarks/gather_layouts.py` — one 3x3 conv C -> C, LiteRT 1 thread, median of 50 "
            "invocations, ratio to the dense conv timed in the same run.",
            "",
            *rows,
            "",
            f"Groups of C/{nodes} channels: below 16 channels per group XNNPACK's grouped conv itself (no gather) "
            "falls well short of k/n, which is what limits the 64-channel layers; the gather layouts differ little.",
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gather_layouts.md").write_text(text)
    print(f"wrote {RESULTS / 'gather_layouts.md'}")


if __name__ == "__main__":
    main()
