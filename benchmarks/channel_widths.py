"""One width for all against a width per channel space, at the same MACs, from the same dense model, side by side.

`prune_channels(keep=r)` thins every channel space to r of its channels;
`prune_channels(macs=m, calibration_data=x)` gives each space its own width
(three whole plans, the one whose outputs stay nearest the dense model's on the
held-out calibration images; docs/channels.md). Per model, seed and sparsity of
tradeoff.py's full profile (r: thin dense's width at RGP's kept MACs there,
`width_matching`; m: the MACs share that width keeps), from tradeoff.py's dense
model and 512 calibration images:

  one width      prune_channels(keep=r, calibration_data=...) ("channels data-aware" in tradeoff.py)
  per space      prune_channels(macs=m, calibration_data=...)

each one-shot and after 1 epoch (MLP 2) from the rate tradeoff.py probed for
"channels data-aware + FT" (same seed); the dense file and the four files are
timed side by side in one `compare_tflite` call (LiteRT, 1 thread, median ratio
to dense over alternating rounds). Dense models missing in --work are trained as
tradeoff.py trains them (CNN 6 epochs ~8 min, IRN 8 epochs ~14 min here).

    python benchmarks/channel_widths.py [--models CNN IRN] [--seeds 0 1 2]

Resumable (results/channel_widths.csv, whose rows name the reconstruction engine they were made with,
`ENGINE`: a run after an engine change measures again beside the older rows); writes results/channel_widths.md.
"""

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from _results import append, done_rows
from tradeoff import (
    MODELS,
    PROFILES,
    accuracy,
    build,
    calibration_images,
    chosen_rates,
    dense_files,
    fashion_mnist,
    macs,
    probed,
    rgp,
    trained,
    width_matching,
)

import rgp_keras

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "channel_widths.csv"
FIELDS = ["model", "seed", "sparsity", "method", "engine", "widths", "accuracy", "macs_ratio", "latency_ratio",
          "seconds"]
# The engine the rows were made with: since 8d682e7 it refits depthwise convolutions and fits branches that end
# in a residual sum to the dense sum (rows made before say "before 8d682e7"); since 70a297b linear bottlenecks are
# turned to the basis their readers need before their channels are chosen.
ENGINE = "70a297b"
METHODS = ("one width", "one width + FT", "per space", "per space + FT")
RATE_OF = "channels data-aware + FT"  # tradeoff.py's probed rate these fine-tune from


def measure(work, models, seeds, rounds):
    done = {(row["model"], row["seed"], row["sparsity"]) for row in done_rows(CSV) if row["engine"] == ENGINE}
    rates = chosen_rates(probed())
    train, test = fashion_mnist(60000)
    for seed in seeds:
        for name in models:
            dense_keras, dense_file = dense_files("full", name, seed, work, train)
            dense = keras.saving.load_model(dense_keras)
            dense_macs = macs(dense)["macs"]
            calibration = calibration_images(train, seed)
            seen = set()
            for sparsity in PROFILES["full"]["sparsities"]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # RGP's no-faster-than warning: only its kept MACs are read
                    kept = macs(rgp(dense, sparsity, seed, assign_channels=False))["kept_macs"]
                if kept in seen:  # the IRN's layers allow no sparser graph than at 87.5 %: the same MACs
                    continue
                seen.add(kept)
                if (name, str(seed), str(sparsity)) in done:
                    continue
                width = width_matching(name, kept)
                share = macs(build(keras, name, width))["macs"] / dense_macs
                files, rows = [dense_file], []
                for method in METHODS:
                    keras.utils.set_random_seed(seed)
                    started = time.perf_counter()
                    amount = dict(keep=width) if method.startswith("one width") else dict(macs=share)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # a Dense refit's few-rows warning: it is ridge-fitted
                        model = rgp_keras.prune_channels(dense, **amount, calibration_data=calibration, verbose=0)
                    if method.endswith("+ FT"):
                        model = trained(model, train, MODELS[name]["epochs"], rates[(name, RATE_OF)])
                    files.append(work / f"widths-{name}-{seed}-{sparsity}-{method.replace(' ', '_')}.tflite")
                    rgp_keras.export_tflite(model, files[-1])
                    summary = rgp_keras.pruning_summary(model)
                    widths = " ".join(str(getattr(layer, "filters", None) or layer.units) for layer in model.layers
                                      if hasattr(layer, "filters") or hasattr(layer, "units"))
                    rows.append(dict(model=name, seed=seed, sparsity=sparsity, method=method, engine=ENGINE,
                                     widths=widths,
                                     accuracy=round(accuracy(model, test), 4),
                                     macs_ratio=round(summary.totals["kept_macs"] / dense_macs, 4),
                                     seconds=round(time.perf_counter() - started, 1)))
                timed = rgp_keras.compare_tflite(files, rounds=rounds)
                for row, result in zip(rows, timed[1:]):
                    append(CSV, FIELDS, {**row, "latency_ratio": round(result["ratio"], 4)})
                    print(f"{name} seed {seed} {sparsity} {row['method']:15s} acc {row['accuracy']:.4f} MACs "
                          f"{row['macs_ratio']} latency {result['ratio']:.3f} widths {row['widths']}", flush=True)


def report():
    by = {}
    for row in done_rows(CSV):
        by.setdefault((row["model"], float(row["sparsity"]), row["engine"]), {}).setdefault(row["method"], []).append(
            row)
    lines = [
        "# One width for all vs a width per channel space (`python benchmarks/channel_widths.py`)", "",
        "From the same dense model and 512 calibration images (tradeoff.py's full profile): `one width` is "
        "prune_channels(keep=r) at thin dense's width r for RGP's kept MACs, `per space` prune_channels(macs=its "
        "MACs share) with a width per channel space; one-shot and after the fine-tuning of tradeoff.py's channel "
        "rows (1 epoch, MLP 2, its probed rate, same seed). The dense file and the four files are timed side by side "
        "in one compare_tflite call (LiteRT, 1 thread, median ratio over 9 alternating rounds).", "",
        "Means over seeds (accuracy %, MACs and latency x dense, per-seed gains of per space over one width):", "",
        "| model | sparsity | engine | seeds | one width | per space | one width + FT | per space + FT | one-shot "
        "gain per seed | + FT gain per seed | latency per space / one width |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, sparsity, engine), methods in sorted(by.items()):
        if len(methods) < len(METHODS):
            continue
        mean = lambda method, field: statistics.mean(float(row[field]) for row in methods[method])
        cell = lambda method: (f"{100 * mean(method, 'accuracy'):.2f} @{mean(method, 'latency_ratio'):.3f} "
                               f"({mean(method, 'macs_ratio'):.3f} MACs)")
        gains = lambda ours, theirs: " ".join(
            f"{100 * (float(a['accuracy']) - float(b['accuracy'])):+.2f}"
            for a, b in zip(methods[ours], methods[theirs]))
        ratio = statistics.mean(float(a["latency_ratio"]) / float(b["latency_ratio"])
                                for a, b in zip(methods["per space + FT"], methods["one width + FT"]))
        lines.append(f"| {model} | {sparsity:g} | {engine} | {len(methods['one width'])} | {cell('one width')} | "
                     f"{cell('per space')} | {cell('one width + FT')} | {cell('per space + FT')} | "
                     f"{gains('per space', 'one width')} | {gains('per space + FT', 'one width + FT')} | {ratio:.3f} |")
    lines += ["", "Widths (output channels of each kernel layer) per seed:", "",
              "| model | sparsity | engine | seed | one width | per space |", "|---|---|---|---|---|---|"]
    for (model, sparsity, engine), methods in sorted(by.items()):
        for one, per in zip(methods.get("one width", []), methods.get("per space", [])):
            lines.append(f"| {model} | {sparsity:g} | {engine} | {one['seed']} | {one['widths']} | {per['widths']} |")
    (RESULTS / "channel_widths.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rgp-tradeoff"), help="tradeoff.py's --work folder")
    parser.add_argument("--models", nargs="+", default=["CNN", "IRN"], choices=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--report", action="store_true", help="only the tables from the CSV")
    args = parser.parse_args()
    if not args.report:
        measure(args.work, args.models, args.seeds, args.rounds)
    report()


if __name__ == "__main__":
    main()
