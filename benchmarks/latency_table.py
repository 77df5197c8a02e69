"""How near `predict_latency` (the sum of a model's segments, each timed once; a file whose sum is under
WHOLE_FILE_BELOW_MS timed whole, beside the dense model's, as `prune_for_latency` predicts its plans) is to the
measured .tflite file.

For the tradeoff benchmark's CNN and IRN (28x28x1) and MobileNetV2 (224x224x3, weights=None), dense and
thinned by `prune_channels(keep=0.5)` and `keep=0.25` (L1, no data): the predicted latency from a fresh table
(timing every segment the model has, LiteRT 1 thread), and the exported file's measured latency (median of
ROUNDS medians of 50 runs). Also the seconds the fresh table took per model (the dense model's segments, then
the thinned models' new ones). Run on an otherwise idle machine; writes results/latency_table.md.

    python benchmarks/latency_table.py
"""

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from tradeoff import build

import rgp_keras
from rgp_keras.plan.latency import WHOLE_FILE_BELOW_MS, LatencyTable, model_segments, predict_latency

RESULTS = Path(__file__).parent / "results"
ROUNDS = 5
KEEPS = (1.0, 0.5, 0.25)
MODELS = os.environ.get("MODELS", "CNN IRN MobileNetV2").split()


def model(name):
    if name == "MobileNetV2":
        return keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    return build(keras, name)


def main():
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            dense = model(name)
            table = LatencyTable(Path(folder) / f"{name}.json")
            for keep in KEEPS:
                candidate = dense if keep == 1.0 else rgp_keras.prune_channels(dense, keep=keep, verbose=0)
                started = time.perf_counter()
                predicted = predict_latency(candidate, table=table, verbose=0,
                                            reference=None if candidate is dense else dense)
                seconds = time.perf_counter() - started
                summed = table.call_ms + sum(table.segment_ms(segment.key) for segment in model_segments(candidate))
                path = rgp_keras.export_tflite(candidate, Path(folder) / f"{name}-{keep}.tflite").path
                measured = float(np.median([rgp_keras.benchmark_tflite(path, runs=50)["median_ms"]
                                            for _ in range(ROUNDS)]))
                ratio = predicted.total_ms / measured
                how = "whole file" if summed < WHOLE_FILE_BELOW_MS else "segments"
                rows.append(f"| {name} | {keep:g} | {len(predicted.segments)} | {len(table.entries)} | {seconds:.1f} | "
                            f"{how} | {summed / measured:.3f} | {predicted.total_ms:.3f} | {measured:.3f} | "
                            f"{ratio:.3f} | {'yes' if abs(ratio - 1) <= 0.1 else 'no'} |")
                print(rows[-1], flush=True)
    machine = LatencyTable().machine
    text = "\n".join([
        "# Predicted vs measured LiteRT latency (`python benchmarks/latency_table.py`)", "",
        f"`predict_latency(model, reference=dense)`, as `prune_for_latency` predicts its plans: the sum of the "
        f"model's segments (a layer and the BatchNormalization / activations fused into it), each converted and "
        f"timed on its own once; a file whose sum is under {WHOLE_FILE_BELOW_MS:g} ms is timed whole instead, "
        "beside the dense model's file, and kept at that ratio to the dense prediction ('how': whole file; "
        "'sum / measured': what the segments alone predicted). Against the exported file's median latency, timed "
        f"apart (median of {ROUNDS} x 50 runs); LiteRT 1 thread, {machine['litert']}, {machine['cpu']}, otherwise "
        "idle. Thinned models: `prune_channels(keep=...)` without data. 'table seconds': the time that call spent "
        "timing what the table did not hold yet (the dense model's row: a fresh table).", "",
        "| model | keep | segments | table entries | table seconds | how | sum / measured | predicted ms | "
        "measured ms | predicted / measured | within 10 % |", "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, ""])
    (RESULTS / "latency_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
