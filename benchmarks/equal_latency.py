"""The planner against data-aware channel pruning at equal latency, their .tflite files timed side by side.

benchmarks/tradeoff.py times each row against the dense file when the row is
made, and plans its "planned" rows at the latency thin dense measured, so rows
made in different sessions carry the machine's drift: the CNN's "channels
data-aware + FT" files at 87.5 %, thin dense's architecture, measure 0.15x here
where thin dense measured 0.20x, and the plans made for 0.20x are 1.4x slower
than them. Here, per model, seed and sparsity of tradeoff.py's full profile:

1. the "channels data-aware + FT" file is timed against the dense file
   (`rgp_keras.compare_tflite`: alternating rounds, median ratio);
2. `prune_for_latency(dense, that ratio, calibration_data=the row's 512
   images)` is fine-tuned as "planned + FT" is (same epochs, same rate, same
   seed) and exported: "planned + FT @ channels";
3. the dense, channel-pruned, tradeoff's "planned + FT" and the new plan's
   files are timed side by side in one `compare_tflite` call.

Accuracies of the first two come from results/tradeoff.csv. The RGP rows' files
are not kept: their latencies are the CSV's (1.3-2.8x the plans').

    python benchmarks/equal_latency.py [--work /tmp/rgp-tradeoff] [--models CNN MLP IRN]

Resumable (results/equal_latency.csv); writes results/equal_latency.md.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from _results import append, done_rows
from tradeoff import (
    MODELS,
    accuracy,
    calibration_images,
    chosen_rates,
    dense_keras_file,
    fashion_mnist,
    planned,
    probed,
    row_file,
    trained,
)

import rgp_keras

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "equal_latency.csv"
FIELDS = ["model", "seed", "sparsity", "method", "target", "accuracy", "latency_ratio", "ratio_low", "ratio_high",
          "seconds"]
CHANNELS, PLANNED, AT_CHANNELS = "channels data-aware + FT", "planned + FT", "planned + FT @ channels"
PEER = "RGP data-aware + FT"
EQUAL = 0.05  # within this of each other, two files are at equal latency (issue 30's goal)


def measure(work, rounds, models):
    rows = [row for row in done_rows(RESULTS / "tradeoff.csv") if row["profile"] == "full"]
    known = {(row["model"], row["seed"], row["sparsity"], row["method"]): row["accuracy"] for row in rows}
    done = {(row["model"], row["seed"], row["sparsity"]) for row in done_rows(CSV)}
    cases = sorted({(row["model"], row["seed"], row["sparsity"]) for row in rows if row["method"] == PLANNED
                    and row["model"] in models})
    rates = chosen_rates(probed())
    train = test = None
    for model, seed, sparsity in cases:
        if (model, seed, sparsity) in done:
            continue
        dense_file = dense_keras_file(work, "full", 60000, model, seed).with_suffix(".tflite")
        files = [dense_file] + [row_file(work, "full", model, seed, sparsity, method) for method in (CHANNELS, PLANNED)]
        if not all(path.exists() for path in files) or not all((model, seed, sparsity, m) in known
                                                               for m in (CHANNELS, PLANNED)):
            print(f"{model} seed {seed} {sparsity}: files or rows missing, skipped", flush=True)
            continue
        target = rgp_keras.compare_tflite(files[:2], rounds=rounds)[1]["ratio"]
        if target >= 1:  # prune_for_latency would refuse it: nothing to plan
            print(f"{model} seed {seed} {sparsity}: the channel-pruned file measured {target:.3f}x dense here, no "
                  "faster: no plan", flush=True)
            continue
        if train is None:
            train, test = fashion_mnist(60000)
        started = time.perf_counter()
        keras.utils.set_random_seed(int(seed))
        dense = keras.saving.load_model(dense_file.with_suffix(".keras"))
        plan = planned(dense, target, calibration_images(train, int(seed)), work / f"latency-table-{model}")
        plan = trained(plan, train, MODELS[model]["epochs"], rates[(model, CHANNELS)])
        known[(model, seed, sparsity, AT_CHANNELS)] = round(accuracy(plan, test), 4)
        files.append(row_file(work, "full", model, seed, sparsity, AT_CHANNELS))
        rgp_keras.export_tflite(plan, files[-1])
        seconds = time.perf_counter() - started
        timed = rgp_keras.compare_tflite(files, rounds=rounds)
        for method, result in zip((CHANNELS, PLANNED, AT_CHANNELS), timed[1:]):
            append(CSV, FIELDS, dict(
                model=model, seed=seed, sparsity=sparsity, method=method, accuracy=known[(model, seed, sparsity,
                                                                                          method)],
                target=round(target, 4) if method == AT_CHANNELS else "", latency_ratio=round(result["ratio"], 4),
                ratio_low=round(result["ratio_low"], 4), ratio_high=round(result["ratio_high"], 4),
                seconds=round(seconds, 1) if method == AT_CHANNELS else ""))
        print(f"{model} seed {seed} {sparsity}: target {target:.3f}; " + ", ".join(
            f"{method} {float(known[(model, seed, sparsity, method)]):.4f} @{result['ratio']:.3f}"
            for method, result in zip((CHANNELS, PLANNED, AT_CHANNELS), timed[1:])), flush=True)


def report():
    tradeoff = {(row["model"], row["sparsity"], row["seed"]): row for row in done_rows(RESULTS / "tradeoff.csv")
                if row["profile"] == "full" and row["method"] == PEER}
    by = {}
    for row in done_rows(CSV):
        by.setdefault((row["model"], row["sparsity"]), {}).setdefault(row["seed"], {})[row["method"]] = row
    lines = [
        "# Planned + FT vs channels data-aware + FT at equal latency (`python benchmarks/equal_latency.py`)", "",
        "Per model, seed and sparsity of results/tradeoff.csv (full profile): `planned + FT @ channels` is "
        "`prune_for_latency` at the latency ratio the `channels data-aware + FT` file measured against the dense "
        "file here, fine-tuned as `planned + FT` (1 epoch, MLP 2, the channel rows' probed rate, same seed); then "
        "the dense file, the channel-pruned one, tradeoff's `planned + FT` (planned at thin dense's latency of "
        "another session) and the new plan are timed side by side in one `compare_tflite` call (LiteRT, 1 thread, "
        "median ratio to dense over alternating rounds). Equal latency: the plan within "
        f"+-{EQUAL:.0%} of the channel-pruned file. `RGP data-aware + FT`: the tradeoff row's own timing (its "
        "files are not kept).", "",
        "| model | sparsity | seed | channels DA + FT | planned + FT @ channels | plan / channels latency | equal "
        "latency | accuracy, plan - channels | planned + FT (thin dense's target) | RGP DA + FT (tradeoff.csv) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    means = {}
    for (model, sparsity), seeds in sorted(by.items()):
        for seed, methods in sorted(seeds.items()):
            channels, plan = methods[CHANNELS], methods[AT_CHANNELS]
            ratio = float(plan["latency_ratio"]) / float(channels["latency_ratio"])
            gain = 100 * (float(plan["accuracy"]) - float(channels["accuracy"]))
            rgp = tradeoff.get((model, sparsity, seed))
            lines.append(
                f"| {model} | {sparsity} | {seed} | {_cell(channels)} | {_cell(plan)} | {ratio:.3f} | "
                f"{'yes' if abs(ratio - 1) <= EQUAL else 'no'} | {gain:+.2f} | {_cell(methods[PLANNED])} | "
                f"{_cell(rgp) if rgp else '-'} |")
            means.setdefault((model, sparsity), []).append((methods, ratio, gain))
    lines += ["", "Means over seeds:", "", "| model | sparsity | seeds | channels DA + FT | planned + FT @ channels | "
              "plan / channels latency | accuracy, plan - channels |", "|---|---|---|---|---|---|---|"]
    for (model, sparsity), found in means.items():
        mean = lambda method, field: statistics.mean(float(m[method][field]) for m, _, _ in found)
        lines.append(
            f"| {model} | {sparsity} | {len(found)} | {mean(CHANNELS, 'accuracy'):.2%} "
            f"@{mean(CHANNELS, 'latency_ratio'):.3f} | {mean(AT_CHANNELS, 'accuracy'):.2%} "
            f"@{mean(AT_CHANNELS, 'latency_ratio'):.3f} | {statistics.mean(r for _, r, _ in found):.3f} | "
            f"{statistics.mean(g for _, _, g in found):+.2f} |")
    (RESULTS / "equal_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(row):
    """'accuracy @latency ratio' of a CSV row."""
    return f"{float(row['accuracy']):.2%} @{float(row['latency_ratio']):.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rgp-tradeoff"), help="tradeoff.py's --work folder")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--report", action="store_true", help="only the tables from the CSV")
    args = parser.parse_args()
    if not args.report:
        measure(args.work, args.rounds, args.models)
    report()


if __name__ == "__main__":
    main()
