"""Accuracy kept on real data (Fashion-MNIST): RGP graphs against dense, random masks and TF-MOT.

Methods at equal training budget, same layers pruned (all but the first and
last prunable layer), n = 64 nodes:
  dense; RGP with the minimum-ASPL graph; RGP with the ring lattice (maximum
  ASPL); RGP with an unoptimised random regular graph; a random unstructured
  mask of the same density; TF-MOT prune_low_magnitude (tf_keras, polynomial
  decay to the target sparsity during the same epochs).
Flows: "finetune" (prune a trained dense model, then fine-tune) and "scratch"
(train from scratch with the mask; RGP uses density-aware initialisation).

Profiles (the exact budget is written into the results):
  --quick  MLP on 20k training images, both flows, 3 seeds; VGG on a 5k-image subset,
           finetune flow, 1 seed. About 15-20 minutes on 2 cores.
  --full   both models on all images, both flows, 3 seeds, longer training.

Writes benchmarks/results/accuracy.md, accuracy.csv and accuracy.png.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import rgp_keras
from _architectures import ARCHITECTURES, build
from rgp_keras.graph import RegularGraph, optimize
from rgp_keras.plots import new_figure

RESULTS = Path(__file__).parent / "results"
NODES = 64
SPARSITIES = {0.75: 16, 0.875: 8, 0.9375: 4}
RGP_METHODS = ("RGP min-ASPL", "RGP ring lattice", "RGP random graph")
METHODS = ("dense", *RGP_METHODS, "random unstructured", "TF-MOT magnitude")
PROFILES = {
    "quick": {
        "MLP": dict(train=20000, seeds=3, flows=("finetune", "scratch"), pretrain=3, finetune=1, scratch=3),
        "VGG": dict(train=5000, seeds=1, flows=("finetune",), pretrain=3, finetune=1, scratch=0),
    },
    "full": {
        "MLP": dict(train=60000, seeds=3, flows=("finetune", "scratch"), pretrain=10, finetune=5, scratch=15),
        "VGG": dict(train=60000, seeds=3, flows=("finetune", "scratch"), pretrain=8, finetune=4, scratch=12),
    },
}

def compiled(model, learning_rate=1e-3):
    model.compile(keras.optimizers.Adam(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def graph_for(method, degree, seed):
    if method == "RGP min-ASPL":
        return optimize(RegularGraph.random(NODES, degree, seed=seed), seed=seed).graph
    if method == "RGP ring lattice":
        return RegularGraph.ring_lattice(NODES, degree)
    return RegularGraph.random(NODES, degree, seed=seed)


class FixedMasks(keras.callbacks.Callback):
    """Keeps a random unstructured mask applied: weights * mask after every batch."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs

    def on_train_batch_end(self, batch, logs=None):
        for weight, mask in self.pairs:
            weight.assign(weight * mask)


def random_unstructured(model, density, seed):
    """Random masks of `density` on the kernels RGP would mask (first and last prunable layer kept)."""
    rng = np.random.default_rng(seed)
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    pairs = [(kernel, (rng.random(kernel.shape) < density).astype("float32")) for kernel in kernels[1:-1]]
    FixedMasks(pairs).on_train_batch_end(0)
    return FixedMasks(pairs)


def run_keras(method, spec, flow, sparsity, seed, pretrained, budget, data):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build(keras, spec)
    epochs = budget["finetune"] if flow == "finetune" else budget["scratch"]
    if flow == "finetune":
        model.set_weights(pretrained)
    callbacks = []
    if method in RGP_METHODS:
        # the paper's mask as it comes: graphs are compared, not data-aware steps
        model = rgp_keras.prune_regular_graph(model, graph=graph_for(method, SPARSITIES[sparsity], seed),
                                              assign_channels=False)
        if flow == "scratch":
            rgp_keras.reinitialize(model, seed=seed)
    elif method == "random unstructured":
        callbacks.append(random_unstructured(model, 1 - sparsity, seed))
    compiled(model).fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0, callbacks=callbacks)
    return model.evaluate(x_test, y_test, verbose=0)[1]


def run_tfmot(spec, flows, seed, weights_path, budget, data_path):
    """TF-MOT magnitude pruning of the tf_keras twin, in a subprocess: {(flow, sparsity): accuracy}."""
    script = textwrap.dedent(
        f"""
        import json, os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _architectures import build
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np, tf_keras as K, tensorflow_model_optimization as tfmot
        data = np.load({str(data_path)!r})
        x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
        pretrained = list(np.load({str(weights_path)!r}).values())
        results = {{}}
        for flow in {list(flows)!r}:
            for sparsity in {list(SPARSITIES)!r}:
                K.utils.set_random_seed({seed})
                model = build(K, {spec!r})
                epochs = {budget['finetune']} if flow == "finetune" else {budget['scratch']}
                if flow == "finetune":
                    model.set_weights(pretrained)
                steps = epochs * int(np.ceil(len(x_train) / 128))
                # ~10 mask updates, the last one exactly at end_step (70 % of the steps)
                frequency = max(1, int(0.7 * steps) // 10)
                end_step = max(frequency, frequency * (int(0.7 * steps) // frequency))
                schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0,
                                                                end_step=end_step, frequency=frequency)
                prunable = [l for l in model.layers if isinstance(l, (K.layers.Dense, K.layers.Conv2D))][1:-1]
                chosen = {{id(l) for l in prunable}}
                pruned = K.models.clone_model(model, clone_function=lambda l: tfmot.sparsity.keras.prune_low_magnitude(
                    l, pruning_schedule=schedule) if id(l) in chosen else l)
                pruned.compile(K.optimizers.Adam(1e-3), K.losses.SparseCategoricalCrossentropy(from_logits=True),
                               metrics=["accuracy"])
                pruned.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0,
                           callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
                stripped = tfmot.sparsity.keras.strip_pruning(pruned)
                kernels = [l.kernel.numpy() for l in stripped.layers if id(l) in chosen]
                reached = sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)
                if reached < sparsity - 0.01:
                    raise RuntimeError(f"TF-MOT reached sparsity {{reached:.3f}}, not {{sparsity}}")
                stripped.compile(metrics=["accuracy"], loss=K.losses.SparseCategoricalCrossentropy(from_logits=True))
                results[f"{{flow}}|{{sparsity}}"] = stripped.evaluate(x_test, y_test, verbose=0)[1]
        print("RESULTS" + json.dumps(results))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"TF-MOT run failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS"))
    return {tuple(key.split("|")): value for key, value in json.loads(line[len("RESULTS"):]).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="about 25 minutes on 2 cores (default)")
    profile.add_argument("--full", action="store_true", help="all data, 3 seeds, longer training (hours)")
    args = parser.parse_args()
    name = "full" if args.full else "quick"
    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    x_train = (x_train[..., None] / 255.0).astype("float32")
    x_test = (x_test[..., None] / 255.0).astype("float32")
    rows, start = [], time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rgp-accuracy-"))
    for model_name, budget in PROFILES[name].items():
        spec = ARCHITECTURES[model_name]
        data = ((x_train[: budget["train"]], y_train[: budget["train"]]), (x_test, y_test))
        data_path = work / f"{model_name}.npz"
        np.savez(data_path, x_train=data[0][0], y_train=data[0][1], x_test=x_test, y_test=y_test)
        for seed in range(budget["seeds"]):
            keras.utils.set_random_seed(seed)
            dense = compiled(build(keras, spec))
            dense.fit(*data[0], epochs=budget["pretrain"], batch_size=128, verbose=0)
            pretrained = dense.get_weights()
            weights_path = work / f"{model_name}-{seed}.npz"
            np.savez(weights_path, *pretrained)
            peer = run_tfmot(spec, budget["flows"], seed, weights_path, budget, data_path)
            for flow in budget["flows"]:
                epochs = budget["finetune"] if flow == "finetune" else budget["scratch"]
                dense_accuracy = run_keras("dense", spec, flow, 0.0, seed, pretrained, budget, data)
                record = lambda method, sparsity, accuracy: rows.append(
                    {"model": model_name, "flow": flow, "method": method, "sparsity": sparsity, "seed": seed,
                     "accuracy": accuracy, "epochs": epochs, "pretrain_epochs": budget["pretrain"] if flow == "finetune" else 0,
                     "train_images": budget["train"]})
                for sparsity in SPARSITIES:
                    record("dense", sparsity, dense_accuracy)
                    for method in (*RGP_METHODS, "random unstructured"):
                        record(method, sparsity, run_keras(method, spec, flow, sparsity, seed, pretrained, budget, data))
                    record("TF-MOT magnitude", sparsity, peer[(flow, str(sparsity))])
                    print(json.dumps(rows[-6:]), flush=True)
    write(rows, name, time.perf_counter() - start)


def write(rows, profile, elapsed):
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "accuracy.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Accuracy kept on Fashion-MNIST", "",
             f"`python benchmarks/accuracy.py --{profile}` ({elapsed / 60:.0f} min on this machine, 2 cores). "
             "Test accuracy on the 10k test images, mean ± std over seeds; n = 64 graph nodes; the first and last "
             "prunable layers stay dense for every method; Adam 1e-3, batch 128. Budget per block below: "
             "'finetune' = dense pre-training epochs, then the stated epochs after pruning (dense: the same epochs "
             "of further training); 'scratch' = the stated epochs from initialisation with the mask fixed "
             "(TF-MOT: polynomial decay to the target over the first 70 % of the steps).", ""]
    goals = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for flow in dict.fromkeys(r["flow"] for r in rows if r["model"] == model):
            block = [r for r in rows if r["model"] == model and r["flow"] == flow]
            first = block[0]
            seeds = len({r["seed"] for r in block})
            lines += [f"## {model}, {flow} ({first['train_images']:,} training images, "
                      + (f"{first['pretrain_epochs']} pre-training + " if flow == "finetune" else "")
                      + f"{first['epochs']} epochs, {seeds} seed{'s' if seeds > 1 else ''})", "",
                      "| method | " + " | ".join(f"{100 * s:g} %" for s in SPARSITIES) + " |",
                      "|---|" + "---|" * len(SPARSITIES)]
            stats = {}
            for method in METHODS:
                cells = []
                for sparsity in SPARSITIES:
                    values = np.array([r["accuracy"] for r in block if r["method"] == method and r["sparsity"] == sparsity])
                    stats[method, sparsity] = values.mean()
                    cells.append(f"{100 * values.mean():.2f} ± {100 * values.std():.2f}")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
            beats = all(stats["RGP min-ASPL", s] > stats["RGP ring lattice", s] for s in SPARSITIES)
            goals.append(f"- {model}, {flow}: RGP min-ASPL beats the ring lattice at every sparsity: "
                         f"**{'met' if beats else 'not met'}**; RGP min-ASPL at 75 % is "
                         f"{100 * (stats['RGP min-ASPL', 0.75] - stats['dense', 0.75]):+.2f} points from dense "
                         f"(goal <= 1 point: **{'met' if stats['dense', 0.75] - stats['RGP min-ASPL', 0.75] <= 0.01 else 'not met'}**); "
                         "against TF-MOT magnitude: " + ", ".join(
                             f"{100 * s:g} % {'RGP' if stats['RGP min-ASPL', s] >= stats['TF-MOT magnitude', s] else 'TF-MOT'} "
                             f"({100 * (stats['RGP min-ASPL', s] - stats['TF-MOT magnitude', s]):+.2f})" for s in SPARSITIES))
    lines += ["## Goals", "", *goals, "", "![accuracy against sparsity](accuracy.png)", ""]
    (RESULTS / "accuracy.md").write_text("\n".join(lines))
    plot(rows)
    print("\n".join(lines))


def plot(rows):
    blocks = list(dict.fromkeys((r["model"], r["flow"]) for r in rows))
    figure = new_figure(figsize=(5 * len(blocks), 4))
    axes = figure.subplots(1, len(blocks), squeeze=False)
    for axis, (model, flow) in zip(axes[0], blocks):
        for method in METHODS:
            means = [100 * np.mean([r["accuracy"] for r in rows if (r["model"], r["flow"], r["method"], r["sparsity"])
                                    == (model, flow, method, s)]) for s in SPARSITIES]
            axis.plot([100 * s for s in SPARSITIES], means, marker="o", label=method)
        axis.set_title(f"{model}, {flow}")
        axis.set_xlabel("sparsity (%)")
        axis.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "accuracy.png", dpi=120)


if __name__ == "__main__":
    main()
