"""The paper's experiment: does a lower ASPL give a more accurate RGP network?

Each setting masks a network with one k-regular graph on n nodes and trains it
from scratch (density-aware initialisation, the paper's flow), once per graph
and seed. Graphs span the ASPL range from the optimised minimum to the ring
lattice (the maximum), with intermediate ones from
`optimize(..., objective=target_aspl)`. Settings:
  MLP          MNIST, 784 -> 15 x 64 -> 10 (the paper's depth), every hidden-to-hidden layer at n/k = 64/4
  CNN 16/4     Fashion-MNIST, the tradeoff benchmark's CNN (32-64-128-128 channels, BatchNorm), its three
               inner convolutions at n/k = 16/4 (a connected 2-regular graph on 16 nodes is the 16-cycle:
               one graph, no ASPL range, so k = 4)
  CNN 64/4     the same CNN at n/k = 64/4 (the 32-channel input of its second conv is narrower than 64
               nodes, so two convolutions are masked)
Reports, per setting, Spearman's rho between ASPL and test accuracy with its
p-value, and a paired comparison of the minimum-ASPL graph with the ring lattice
over seeds (mean difference, paired t-test).

Resumable: every run is appended to results/aspl_correlation.csv at once and
runs already there are skipped. Writes results/aspl_correlation.md and .png.

    python benchmarks/aspl_correlation.py [--settings MLP "CNN 16/4" "CNN 64/4"] [--graphs 8] [--seeds 5]
    python benchmarks/aspl_correlation.py --report
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from _results import append, done_rows
from scipy import stats

import rgp_keras
from rgp_keras.graph import RegularGraph, optimize
from rgp_keras.plots import new_figure

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "aspl_correlation.csv"
FIELDS = ["setting", "nodes", "degree", "graph", "aspl", "diameter", "seed", "accuracy", "seconds"]
BATCH = 128
SETTINGS = {
    "MLP": dict(data="mnist", nodes=64, degree=4, train=60000, epochs=5, rate=1e-3),
    "CNN 16/4": dict(data="fashion", nodes=16, degree=4, train=10000, epochs=3, rate=2e-3),
    "CNN 64/4": dict(data="fashion", nodes=64, degree=4, train=10000, epochs=3, rate=2e-3),
}


def graphs_across_aspl(nodes, degree, count, seed=0):
    """`count` graphs from the minimum-ASPL graph to the ring lattice, evenly spaced in ASPL."""
    low = optimize(RegularGraph.random(nodes, degree, seed=seed), seed=seed).graph
    high = RegularGraph.ring_lattice(nodes, degree)
    chosen = [low]
    for i, target in enumerate(np.linspace(low.aspl, high.aspl, count)[1:-1]):
        start = RegularGraph.random(nodes, degree, seed=seed + 1 + i)
        chosen.append(optimize(start, float(target), seed=seed + 1 + i).graph)
    return chosen + [high]


def build(setting):
    if setting == "MLP":
        layers = [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu")]
        layers += [keras.layers.Dense(64, activation="relu") for _ in range(14)]
        return keras.Sequential(layers + [keras.layers.Dense(10)])
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for item in (32, "pool", 64, "pool", 128, 128):
        if item == "pool":
            x = keras.layers.MaxPooling2D()(x)
        else:
            x = keras.layers.Conv2D(item, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def train(setting, graph, seed, data):
    config = SETTINGS[setting]
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    pruned = rgp_keras.prune_regular_graph(build(setting), graph=graph, assign_channels=False)
    rgp_keras.reinitialize(pruned, seed=seed)
    steps = config["epochs"] * int(np.ceil(len(x_train) / BATCH))
    pruned.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(config["rate"], steps)),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x_train, y_train, epochs=config["epochs"], batch_size=BATCH, verbose=0)
    return float(np.mean(np.argmax(pruned.predict(x_test, batch_size=1000, verbose=0), axis=-1) == y_test))


def load(setting):
    config = SETTINGS[setting]
    (x_train, y_train), (x_test, y_test) = (rgp_keras.load_mnist if config["data"] == "mnist"
                                            else rgp_keras.load_fashion_mnist)()
    prepare = (lambda x: x.astype("float32") / 255.0) if setting == "MLP" else \
        (lambda x: (x.astype("float32") / 255.0)[..., None])
    return (prepare(x_train[: config["train"]]), y_train[: config["train"]]), (prepare(x_test), y_test)


def run(settings, count, seeds):
    done = {(r["setting"], r["graph"], r["seed"]) for r in done_rows(CSV)}
    for setting in settings:
        config = SETTINGS[setting]
        data = load(setting)
        graphs = graphs_across_aspl(config["nodes"], config["degree"], count)
        # the two ends first: a run cut short (settings span sessions) already has the paired comparison
        for index in [0, len(graphs) - 1, *range(1, len(graphs) - 1)]:
            graph = graphs[index]
            for seed in range(seeds):
                if (setting, str(index), str(seed)) in done:
                    continue
                started = time.perf_counter()
                accuracy = train(setting, graph, seed, data)
                append(CSV, FIELDS, dict(setting=setting, nodes=config["nodes"], degree=config["degree"], graph=index,
                                         aspl=round(graph.aspl, 4), diameter=graph.diameter, seed=seed,
                                         accuracy=round(accuracy, 4), seconds=round(time.perf_counter() - started, 1)))
                print(f"{setting} graph {index} (ASPL {graph.aspl:.4f}) seed {seed}: {accuracy:.4f}", flush=True)


def analyse(rows):
    """Spearman's rho over all runs, and min-ASPL minus ring lattice paired by seed."""
    aspl = np.array([float(r["aspl"]) for r in rows])
    accuracy = np.array([float(r["accuracy"]) for r in rows])
    rho, p_value = stats.spearmanr(aspl, accuracy)
    low, high = aspl.min(), aspl.max()
    by_seed = lambda value: {r["seed"]: float(r["accuracy"]) for r in rows if float(r["aspl"]) == value}
    lows, highs = by_seed(low), by_seed(high)
    seeds = sorted(set(lows) & set(highs))
    differences = np.array([lows[s] - highs[s] for s in seeds])
    paired_p = stats.ttest_rel([lows[s] for s in seeds], [highs[s] for s in seeds]).pvalue if len(seeds) > 1 else None
    return rho, p_value, differences, paired_p


def report():
    rows = done_rows(CSV)
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rows)]
    text = ["# ASPL against accuracy (the paper's claim)", "",
            "`python benchmarks/aspl_correlation.py` (see its docstring). Each run: one graph, one seed, trained "
            "from scratch with density-aware initialisation, Adam with cosine decay, batch 128. The paper's claim "
            "is that a lower ASPL gives a higher accuracy: rho < 0 and the minimum-ASPL graph above the ring "
            "lattice.", ""]
    figure = new_figure(figsize=(5 * max(1, len(settings)), 4))
    axes = figure.subplots(1, max(1, len(settings)), squeeze=False)[0]
    for axis, setting in zip(axes, settings):
        runs = [r for r in rows if r["setting"] == setting]
        config = SETTINGS[setting]
        rho, p_value, differences, paired_p = analyse(runs)
        seeds = len({r["seed"] for r in runs})
        text += [f"## {setting}: n/k = {config['nodes']}/{config['degree']}, "
                 f"{'MNIST' if config['data'] == 'mnist' else 'Fashion-MNIST'}, {config['train']} training images, "
                 f"{config['epochs']} epochs, {len({r['graph'] for r in runs})} graphs x {seeds} seeds "
                 f"({sum(float(r['seconds']) for r in runs) / 60:.0f} min)", "",
                 "| ASPL | diameter | accuracy mean ± std (%) | runs |", "|---|---|---|---|"]
        for aspl in sorted({float(r["aspl"]) for r in runs}):
            group = [r for r in runs if float(r["aspl"]) == aspl]
            values = 100 * np.array([float(r["accuracy"]) for r in group])
            text.append(f"| {aspl:.4f} | {group[0]['diameter']} | {values.mean():.2f} ± {values.std():.2f} | "
                        f"{len(group)} |")
        verdict = "supports the claim" if rho < 0 and p_value < 0.05 else (
            "contradicts it" if rho > 0 and p_value < 0.05 else "no significant correlation")
        paired = (f"min-ASPL minus ring lattice, paired by seed ({len(differences)} seeds): "
                  f"{100 * differences.mean():+.2f} ± {100 * differences.std():.2f} points"
                  + (f", paired t-test p = {paired_p:.2g}" if paired_p is not None else ""))
        text += ["", f"Spearman's rho (ASPL vs accuracy, {len(runs)} runs) = **{rho:.3f}**, p = {p_value:.2g}: "
                 f"**{verdict}**. {paired}.", ""]
        axis.scatter([float(r["aspl"]) for r in runs], [100 * float(r["accuracy"]) for r in runs], alpha=0.6)
        axis.set_xlabel(f"ASPL of the {config['degree']}-regular graph on {config['nodes']} nodes")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{setting}: rho = {rho:.2f} (p = {p_value:.1g})")
    text += ["![accuracy against ASPL](aspl_correlation.png)", ""]
    figure.tight_layout()
    figure.savefig(RESULTS / "aspl_correlation.png", dpi=110)
    (RESULTS / "aspl_correlation.md").write_text("\n".join(text))
    print("\n".join(text))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--graphs", type=int, default=8, help="graphs spanning the ASPL range (>= 8)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per graph (>= 5)")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the CSV")
    args = parser.parse_args()
    if not args.report:
        RESULTS.mkdir(exist_ok=True)
        run(args.settings, args.graphs, args.seeds)
    report()


if __name__ == "__main__":
    main()
