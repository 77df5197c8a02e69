"""How near `pruning_summary(...).estimated_latency` is to the measured files of the tradeoff benchmark.

For the tradeoff benchmark's CNN, IRN and MLP (built untrained: the estimate reads shapes and masks only), each
pruned as its "RGP data-aware" rows were (`nodes="auto"`, seed 0; channel order does not change the estimate),
the summary's estimated latency ratio beside the median over seeds of the latency ratio those rows measured
(results/tradeoff.csv, full profile). Writes results/summary_estimate.md.

    python benchmarks/summary_estimate.py
"""

import os
import statistics
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from _results import done_rows
from tradeoff import CSV, SPARSITIES, build

import rgp_keras

RESULTS = Path(__file__).parent / "results"


def main():
    rows = done_rows(CSV)
    lines = ["# The summary's latency estimate against measured files", "",
             "`python benchmarks/summary_estimate.py`: `pruning_summary(prune_regular_graph(model, sparsity=s, "
             "seed=0)).estimated_latency` against the median latency ratio of the tradeoff benchmark's "
             "`RGP data-aware` rows (full profile, LiteRT 1 thread).", "",
             "| model | sparsity | graph | estimated | measured | estimated / measured |", "|---|---|---|---|---|---|"]
    for name in ("CNN", "IRN", "MLP"):
        dense = build(keras, name)
        for sparsity in SPARSITIES:
            measured = [float(r["latency_ratio"]) for r in rows if r["profile"] == "full" and r["model"] == name
                        and r["method"] == "RGP data-aware" and float(r["sparsity"]) == sparsity]
            if not measured:
                continue  # (the IRN allows no graph past 87.5 %)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the estimate's own warning is what this measures
                pruned = rgp_keras.prune_regular_graph(dense, sparsity=sparsity, seed=0, assign_channels=False,
                                                       verbose=0)
            summary = rgp_keras.pruning_summary(pruned)
            estimate, median = summary.estimated_latency, statistics.median(measured)
            lines.append(f"| {name} | {sparsity:g} | {summary.graph.nodes}/{summary.graph.degree} | {estimate:.3f} | "
                         f"{median:.3f} | {estimate / median:.2f} |")
    (RESULTS / "summary_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
