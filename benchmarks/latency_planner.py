"""Does `prune_for_latency` reach the latency asked for, and keep more accuracy than one width for all?

For each model and target (the pruned file's latency over the dense file's: 0.5, 0.35, 0.25):
- "planner": `prune_for_latency(dense, target, calibration_data=512 training images)`;
- "uniform": `prune_channels(dense, keep=w, calibration_data=the same)`, w the largest whose predicted latency
  is at most the planner's (bisection on `predict_latency`): the same engine, one width for every space
  (CNN and IRN only).
The `plan` column lists the whole plans the planner judged (predicted ratio, output error on the calibration
samples; * the one returned). The CNN rows "planner, least summed error only" and "uniform, at its
latency" were measured before the planner judged whole plans (it returned the least summed error's), the rows
"..., held-out judge" while it judged them on the fifth of the samples the refits hold out; the rows
"..., segment sums" before files predicted under 1 ms were timed whole (their prediction summed segments),
"..., whole files in 3 rounds" while such files were timed in 3 rounds (now 9, each its own interpreter).
Each is exported (float LiteRT) and timed against the dense file (ROUNDS alternating rounds, medians, 1 thread),
its test accuracy measured one-shot and after FT_EPOCHS epoch(s) of fine-tuning (Adam, cosine decay, the rate
the tradeoff benchmark's probe chose for "channels data-aware + FT").
Models: the tradeoff benchmark's CNN and IRN on Fashion-MNIST, its seed-0 dense models (trained there the first
time, cached in --work), and MobileNetV2 224 (weights=None, latency only: its accuracy would mean nothing; the
first row also times its fresh latency table). Resumable: rows already in results/latency_planner.csv are
skipped. Writes results/latency_planner.csv and .md.

    python benchmarks/latency_planner.py [--models CNN IRN MobileNetV2] [--work /tmp/rgp-tradeoff]
    python benchmarks/latency_planner.py --report
"""

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from _results import append, done_rows
from tradeoff import (
    MODELS,
    accuracy,
    calibration_images,
    chosen_rates,
    dense_files,
    fashion_mnist,
    probed,
    trained,
)

import rgp_keras
from rgp_keras.plan.latency import LatencyTable, predict_latency

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "latency_planner.csv"
FIELDS = ("model", "target", "method", "widths", "predicted_ratio", "measured_ratio", "accuracy", "accuracy_ft",
          "seconds", "table_seconds", "plan")
TARGETS = (0.5, 0.35, 0.25)
ROUNDS = 7
FT_EPOCHS = 1


def measured_ratio(model, dense_path, folder):
    """The pruned file's time over the dense file's: ROUNDS alternating rounds, each of >= 30 runs and >= 10 ms
    of the dense file."""
    path = os.path.join(folder, "pruned.tflite")
    rgp_keras.export_tflite(model, path)
    runs = max(30, math.ceil(10 / rgp_keras.benchmark_tflite(dense_path, threads=1)["median_ms"]))
    return rgp_keras.compare_tflite([dense_path, path], threads=1, rounds=ROUNDS, runs=runs)[1]["ratio"]


def uniform_width(dense, predicted_ms, cache_dir):
    """The largest keep whose thinned model is predicted at most `predicted_ms`."""
    low, high = 0.0, 1.0
    for _ in range(10):
        middle = (low + high) / 2
        thin = rgp_keras.prune_channels(dense, keep=middle)
        if predict_latency(thin, cache_dir=cache_dir, verbose=0).total_ms <= predicted_ms:
            low = middle
        else:
            high = middle
    return low


def widths(model):
    """Each kernel layer's output channels, with ":n/k" where an RGP graph masks it."""
    def width(layer):
        inner = getattr(layer, "layer", layer)
        channels = getattr(inner, "filters", getattr(inner, "units", None))
        return None if channels is None else f"{channels}:{layer.graph.nodes}/{layer.graph.degree}" \
            if inner is not layer else str(channels)

    return " ".join(text for layer in model.layers if (text := width(layer)) is not None)


def run(models, work):
    done = {(row["model"], row["target"], row["method"]) for row in done_rows(CSV)}
    for name in models:
        if name == "MobileNetV2":
            dense = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
            calibration = np.random.default_rng(0).normal(size=(64, 224, 224, 3)).astype("float32")
            train = test = None
        else:
            train, test = fashion_mnist(60000)
            dense = keras.saving.load_model(dense_files("full", name, 0, Path(work), train)[0])
            calibration = calibration_images(train, 0)
            rate = chosen_rates(probed()).get((name, "channels data-aware + FT"), MODELS[name]["rate"])
        with tempfile.TemporaryDirectory() as folder:
            dense_path = os.path.join(folder, "dense.tflite")
            rgp_keras.export_tflite(dense, dense_path)
            table_dir = Path(work) / f"latency-table-{name}"
            for target in TARGETS:
                if (name, str(target), "planner") in done:
                    continue
                if name == "MobileNetV2" and target == TARGETS[0]:  # the cost of a first table, from nothing
                    shutil.rmtree(table_dir, ignore_errors=True)
                timing.clear()
                started = time.perf_counter()
                pruned, plan = rgp_keras.prune_for_latency(dense, target, calibration_data=calibration,
                                                           cache_dir=table_dir, verbose=0)
                seconds, table_seconds = time.perf_counter() - started, sum(timing)
                methods = [("planner", pruned)]
                if test is not None:  # (MobileNetV2: each bisection step would time 68 new segments)
                    keep = uniform_width(dense, plan.predicted_ms, table_dir)
                    methods.append(("uniform", rgp_keras.prune_channels(dense, keep=keep, calibration_data=calibration,
                                                                        verbose=0)))
                for method, model in methods:
                    row = dict(model=name, target=target, method=method, widths=widths(model),
                               predicted_ratio=round(predict_latency(model, cache_dir=table_dir, verbose=0).total_ms
                                                     / plan.dense_ms, 4),
                               measured_ratio=round(measured_ratio(model, dense_path, folder), 4),
                               accuracy="", accuracy_ft="", seconds=round(seconds, 1) if method == "planner" else "",
                               table_seconds=round(table_seconds, 1) if method == "planner" else "",
                               plan=judged(plan) if method == "planner" else "")
                    if test is not None:
                        row["accuracy"] = round(accuracy(model, test), 4)
                        keras.utils.set_random_seed(0)
                        row["accuracy_ft"] = round(accuracy(trained(model, train, FT_EPOCHS, rate), test), 4)
                    append(CSV, FIELDS, row)
                    print(row, flush=True)


def judged(plan):
    """The whole plans `prune_for_latency` judged: "name x-ratio error", the chosen one starred."""
    return "; ".join(f"{'*' if row['chosen'] else ''}{row['plan']} {row['predicted']:.3f}x {row['output_error']:.4g}"
                     for row in plan.candidates)


timing = []  # seconds spent converting and timing segments, per LatencyTable.measure call


def _timed(measure):
    def timed(self, segments, progress=False):
        started = time.perf_counter()
        try:
            return measure(self, segments, progress)
        finally:
            timing.append(time.perf_counter() - started)

    return timed


LatencyTable.measure = _timed(LatencyTable.measure)


def report():
    rows = done_rows(CSV)
    lines = ["# prune_for_latency: latency reached and accuracy kept", "",
             "`python benchmarks/latency_planner.py` (see its docstring): LiteRT float files, 1 thread, the ratio "
             "to the dense file measured in alternating rounds (median of 7). *planner*: `prune_for_latency`; "
             "*uniform*: `prune_channels` data-aware at the one width predicted as fast. Accuracy: Fashion-MNIST "
             "test set, one-shot and after 1 epoch of fine-tuning; MobileNetV2 (weights=None) is timed only.", "",
             "| model | target | method | widths (kernel layers; :n/k RGP-masked) | predicted | measured | "
             "measured / target | one-shot | + 1 epoch | planner s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        off = float(row["measured_ratio"]) / float(row["target"])
        percent = lambda value: f"{100 * float(value):.2f} %" if value else "-"
        lines.append(f"| {row['model']} | {row['target']} | {row['method']} | {row['widths']} | "
                     f"{row['predicted_ratio']} | {row['measured_ratio']} | {off:.3f} | {percent(row['accuracy'])} | "
                     f"{percent(row['accuracy_ft'])} | {row['seconds'] or ''} |")
    lines += ["", "The whole plans each planner row judged (predicted x dense, output error on the calibration "
              "samples, on the held-out fifth in the rows so labelled; * returned):"]
    lines += [f"- {row['model']} {row['target']}: {row['plan']}" for row in rows if row.get("plan")]
    lines += ["", "Seconds in the planner's LiteRT timing (table s) of its whole call (planner s); the first "
              "MobileNetV2 row starts from an empty table (the dense model and 4 uniform widths, then the plans):"]
    lines += [f"- {row['model']} {row['target']}: {float(row['table_seconds']):.0f} of {float(row['seconds']):.0f} s"
              for row in rows if row["table_seconds"]]
    (RESULTS / "latency_planner.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["CNN", "IRN", "MobileNetV2"])
    parser.add_argument("--work", default="/tmp/rgp-tradeoff")
    parser.add_argument("--report", action="store_true", help="only write results/latency_planner.md")
    args = parser.parse_args()
    if not args.report:
        run(args.models, args.work)
    report()


if __name__ == "__main__":
    main()
