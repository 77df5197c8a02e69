"""Which sensitivity proxy ranks the fine-tuned accuracy of `prune_for_latency`'s plans?

Plans of one latency that differ only in their widths: `prune_for_latency(dense, TARGET)` with each channel
space's removal errors (`removal_curves`) scaled by a random factor (log-normal, sigma SIGMA; plan 0 unscaled),
so that the search trades the spaces' widths otherwise while the budget stays the same. Per plan, computed
one-shot on the calibration images (512 training images, unlabelled) or held-out training images:
- planner: the summed removal error of the plan's widths, unscaled (what the search minimises);
- output error: ||f_pruned(x) - f_dense(x)||^2 / ||f_dense(x)||^2 on the calibration images (logits);
- KL: mean KL(softmax f_dense || softmax f_pruned) on the calibration images;
- one-shot accuracy: on the last 2000 training images, labelled (a proxy that needs labels; for reference);
then the plan is fine-tuned FT_EPOCHS epoch(s) (Adam, cosine decay from the rate the tradeoff benchmark probed
for "channels data-aware + FT") and its test accuracy measured. Reported: each proxy's Spearman rank
correlation with the fine-tuned accuracy (lower error should mean higher accuracy: negative rho for the errors,
positive for the one-shot accuracy), and with the one-shot test accuracy.
Models: the tradeoff benchmark's seed-0 dense CNN and IRN (Fashion-MNIST, cached in --work). Resumable
(results/planner_proxy.csv).

    python benchmarks/planner_proxy.py [--models CNN IRN] [--plans 12]
    python benchmarks/planner_proxy.py --report
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from _results import append, done_rows
from scipy.special import log_softmax
from scipy.stats import spearmanr
from tradeoff import MODELS, accuracy, calibration_images, chosen_rates, dense_files, fashion_mnist, probed, trained

import rgp_keras
from rgp_keras.plan import search

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "planner_proxy.csv"
FIELDS = ("model", "target", "plan", "widths", "predicted_ratio", "planner", "output_error", "kl", "oneshot_heldout",
          "oneshot_test", "accuracy_ft")
TARGETS = {"CNN": 0.3, "IRN": 0.4}
SIGMA = 1.0
FT_EPOCHS = 1
PROXIES = ("planner", "output_error", "kl", "oneshot_heldout", "oneshot_test")


def plan_with_scaled_errors(dense, target, calibration, seed, table_dir):
    """`prune_for_latency`'s model with each space's removal errors scaled by a random factor (seed 0: none),
    and its summed unscaled error."""
    real_curves, real_candidates, real_plans, seen = search.removal_curves, search._candidates, search.PLANS, {}

    def curves(*args):
        found = real_curves(*args)
        seen["costs"] = {root: np.concatenate([[0.0], errors]) for root, (_, errors) in found.items()}
        rng = np.random.default_rng(seed)
        return {root: (removed, errors * (rng.lognormal(0.0, SIGMA) if seed else 1.0))
                for root, (removed, errors) in found.items()}

    def candidates(*args):
        found = real_candidates(*args)
        seen["plan"] = found[0][1]
        return found

    # the greedy plan on the scaled errors only: the plans this study ranks
    search.removal_curves, search._candidates, search.PLANS = curves, candidates, ("least summed error",)
    try:
        model, plan = rgp_keras.prune_for_latency(dense, target, calibration_data=calibration, cache_dir=table_dir,
                                                  verbose=0)
    finally:
        search.removal_curves, search._candidates, search.PLANS = real_curves, real_candidates, real_plans
    found = seen["plan"][1]
    spent = sum(float(seen["costs"][root][found.spaces.width(root) - count]) for root, count in found.counts.items())
    return model, plan, spent


def output_changes(dense, pruned, x):
    """(relative squared error of the logits, mean KL divergence of the softmax) of `pruned` against `dense`."""
    reference, outputs = dense.predict(x, verbose=0, batch_size=256), pruned.predict(x, verbose=0, batch_size=256)
    error = float(np.sum((outputs - reference) ** 2) / np.sum(reference ** 2))
    log_p, log_q = log_softmax(reference, axis=1), log_softmax(outputs, axis=1)
    return error, float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


def run(models, plans, work):
    done = {(row["model"], row["plan"]) for row in done_rows(CSV)}
    train, test = fashion_mnist(60000)
    calibration = calibration_images(train, 0)
    labelled = (train[0][-2000:], train[1][-2000:])  # the one-shot accuracy proxy's (it needs labels)
    for name in models:
        dense = keras.saving.load_model(dense_files("full", name, 0, Path(work), train)[0])
        rate = chosen_rates(probed()).get((name, "channels data-aware + FT"), MODELS[name]["rate"])
        for seed in range(plans):
            if (name, str(seed)) in done:
                continue
            model, plan, spent = plan_with_scaled_errors(dense, TARGETS[name], calibration, seed,
                                                         Path(work) / f"latency-table-{name}")
            error, kl = output_changes(dense, model, calibration)
            widths = " ".join(str(row["width"]).split(" -> ")[-1] for row in plan.rows)
            row = dict(model=name, target=TARGETS[name], plan=seed, widths=widths,
                       predicted_ratio=round(plan.predicted_ms / plan.dense_ms, 4), planner=round(spent, 5),
                       output_error=round(error, 5), kl=round(kl, 5),
                       oneshot_heldout=round(accuracy(model, labelled), 4),
                       oneshot_test=round(accuracy(model, test), 4))
            keras.utils.set_random_seed(0)
            row["accuracy_ft"] = round(accuracy(trained(model, train, FT_EPOCHS, rate), test), 4)
            append(CSV, FIELDS, row)
            print(row, flush=True)


def report():
    rows = done_rows(CSV)
    lines = ["# Which sensitivity proxy ranks the fine-tuned accuracy of the planner's plans", "",
             "`python benchmarks/planner_proxy.py` (see its docstring): plans of one predicted latency whose widths "
             f"differ (removal errors scaled per space by log-normal factors, sigma {SIGMA}), each scored one-shot by "
             f"each proxy, then fine-tuned {FT_EPOCHS} epoch(s). Spearman rho of each proxy against the test accuracy "
             "(errors: negative is right; accuracies: positive).", "",
             "| model | plans | latency (predicted x dense) | accuracy after FT (min-max) | " +
             " | ".join(f"rho {proxy}" for proxy in PROXIES) + " | rho against one-shot test accuracy: planner |",
             "|---|---|---|---|" + "---|" * (len(PROXIES) + 1)]
    for name in sorted({row["model"] for row in rows}):
        group = [row for row in rows if row["model"] == name]
        tuned = [float(row["accuracy_ft"]) for row in group]
        rhos = [spearmanr([float(row[proxy]) for row in group], tuned)[0] for proxy in PROXIES]
        oneshot = spearmanr([float(row["planner"]) for row in group], [float(row["oneshot_test"]) for row in group])[0]
        latency = [float(row["predicted_ratio"]) for row in group]
        lines.append(
            f"| {name} | {len(group)} | {min(latency):.3f}-{max(latency):.3f} | {100 * min(tuned):.2f}-"
            f"{100 * max(tuned):.2f} % | " + " | ".join(f"{rho:+.2f}" for rho in rhos) +
            f" | {oneshot:+.2f} |")
    lines += ["", "| model | plan | widths | predicted | planner | output error | KL | one-shot held-out | "
              "one-shot test | + FT |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['plan']} | {r['widths']} | {r['predicted_ratio']} | {r['planner']} | "
              f"{r['output_error']} | {r['kl']} | {r['oneshot_heldout']} | {r['oneshot_test']} | {r['accuracy_ft']} |"
              for r in rows]
    (RESULTS / "planner_proxy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(TARGETS), default=["CNN"])
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--work", default="/tmp/rgp-tradeoff", help="the tradeoff benchmark's dense models")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        run(args.models, args.plans, args.work)
    report()


if __name__ == "__main__":
    main()
