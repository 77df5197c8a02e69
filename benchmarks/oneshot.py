"""One-shot pruning of a trained model with a little data: what channel assignment and reconstruction keep.

Full Fashion-MNIST (60k / 10k). For each model and seed, the dense model is
trained (budget below), 512 calibration images are drawn from the training set,
and the model is pruned one-shot by:
  RGP plain            the paper's mask on the trained weights (assign_channels=False)
  RGP + assignment     channel assignment without data (|w|^2)
  RGP + reconstruction least-squares refit + BatchNorm statistics, channel order kept
  RGP + both           assignment (w^2 x input energy) + reconstruction: prune_regular_graph's default
                       with calibration_data (on the MLP the fits also use 3584 mixes of pairs of the
                       512 images, calibration_mixes="auto"; the CNN's convolutions get none)
  RGP + both, no mixes the same on the 512 images only (calibration_mixes=0; MLP only: the CNN's masked
                       layers are convolutions with enough rows, so "auto" adds no mixes there)
  RGP + both, best of 4 graphs
                       the default with graph_candidates=4: four minimum-ASPL graphs (seeds s..s+3), the
                       one whose pruned model reproduces the dense outputs on the calibration set best
                       (MLP only: at n = 16 there are few distinct graphs, at 16/2 one)
  TF-MOT magnitude     prune_low_magnitude, ConstantSparsity, masks set at the first step (unstructured)
  RGP plain, distilled / RGP + both, distilled
                       the same pruned models as RGP plain / RGP + both, fine-tuned towards the dense
                       model's class probabilities (rgp_keras.distiller: temperature 1, no label loss)
                       instead of the labels; each fine-tuning step also runs the dense model forward
Each is evaluated right after pruning and after one fine-tuning epoch (Adam,
cosine from 5e-4, batch 128; TF-MOT keeps updating its masks during it). The
same layers are pruned by every method: all prunable layers but the first and
the last.

Models: MLP 784-512x4-10 at n = 64 (dense: 10 epochs), the VGG-BN CNN of
_architectures.py (44 M MACs) at n = 16 (n = 32, k = 2 for 93.75 %: a
regular graph needs k >= 2; dense: 4 epochs). Sparsities 75 / 87.5 / 93.75 %.
Every row is fine-tuned (a CNN epoch costs ~3.5 min of one core here).

Resumable: every finished row is appended to results/oneshot.csv at once and
rows already there are skipped, so a run can be completed across sessions;
trained dense models are cached in --work. Writes results/oneshot.md.

    python benchmarks/oneshot.py [--models MLP CNN] [--seeds 3] [--seed S] [--work /tmp/rgp-oneshot]
    python benchmarks/oneshot.py --cost    # MobileNetV2, ResNet50, EfficientNetB0 at 224x224: seconds, memory
    python benchmarks/oneshot.py --cost-channels   # prune_channels(keep=0.5) on MobileNetV2, 512 images
    python benchmarks/oneshot.py --equivalence TREE   # one-shot results vs an older commit's work tree
    python benchmarks/oneshot.py --speed TREE   # README snippet and demo calibration step: seconds vs TREE
"""

import argparse
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from _architectures import ARCHITECTURES, build
from _results import append, done_rows

import rgp_keras
from rgp_keras.graph import RegularGraph, optimize

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "oneshot.csv"
FIELDS = ["model", "method", "sparsity", "seed", "dense", "one_shot", "fine_tuned", "prune_seconds", "calibration"]
CALIBRATION = 512
MODELS = {  # graphs: sparsity -> (nodes, degree)
    "MLP": dict(spec="MLP-512", graphs={0.75: (64, 16), 0.875: (64, 8), 0.9375: (64, 4)}, epochs=10,
                learning_rate=1e-3),
    "CNN": dict(spec="CNN", graphs={0.75: (16, 4), 0.875: (16, 2), 0.9375: (32, 2)}, epochs=4, learning_rate=2e-3,
                skip=("RGP + both, no mixes", "RGP + both, best of 4 graphs")),
}
RGP_OPTIONS = {
    "RGP plain": dict(assign_channels=False),
    "RGP + assignment": dict(assign_channels=True),
    "RGP + reconstruction": dict(assign_channels=False, calibration=True),
    "RGP + both": dict(assign_channels=True, calibration=True),
    "RGP + both, no mixes": dict(assign_channels=True, calibration=True, calibration_mixes=0),
    "RGP + both, best of 4 graphs": dict(assign_channels=True, calibration=True, graph_candidates=4),
    "RGP plain, distilled": dict(assign_channels=False, distilled=True),
    "RGP + both, distilled": dict(assign_channels=True, calibration=True, distilled=True),
}
METHODS = ("RGP plain", "RGP + assignment", "RGP + reconstruction", "RGP + both", "RGP + both, no mixes",
           "RGP + both, best of 4 graphs", "TF-MOT magnitude", "RGP plain, distilled",
           "RGP + both, distilled")  # the table's row order
FINE_TUNE_RATE = 5e-4
BATCH = 128


def compiled(model, learning_rate, steps):
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model, data):
    x, y = data
    return float(np.mean(np.argmax(model.predict(x, batch_size=1000, verbose=0), axis=-1) == y))


def dense_model(name, seed, train, test, work):
    """The trained dense model of `name` and `seed`, trained once and cached in `work`."""
    path = work / f"{name}-{seed}.keras"
    if path.exists():
        return keras.saving.load_model(path)
    setup = MODELS[name]
    keras.utils.set_random_seed(seed)
    model = build(keras, ARCHITECTURES[setup["spec"]])
    steps = setup["epochs"] * int(np.ceil(len(train[0]) / BATCH))
    compiled(model, setup["learning_rate"], steps).fit(*train, epochs=setup["epochs"], batch_size=BATCH, verbose=0)
    model.save(path)
    print(f"{name} seed {seed}: dense {accuracy(model, test):.4f}", flush=True)
    return model


def fine_tune(model, train, seed, teacher=None):
    """One epoch on the labels, or towards `teacher`'s class probabilities when given."""
    keras.utils.set_random_seed(seed)
    trainer = model if teacher is None else rgp_keras.distiller(model, teacher)
    compiled(trainer, FINE_TUNE_RATE, int(np.ceil(len(train[0]) / BATCH))).fit(
        *train, epochs=1, batch_size=BATCH, verbose=0)


def run_rgp(method, dense, graph, calibration, train, test, seed):
    options = dict(RGP_OPTIONS[method])
    data = calibration if options.pop("calibration", False) else None
    teacher = dense if options.pop("distilled", False) else None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classifier's refit warns about 512 rows for 513 features (MLP)
        if options.get("graph_candidates", 1) > 1:  # candidate 1 is `graph`, the others the next seeds' graphs
            how = dict(degree=graph.degree, nodes=graph.nodes, seed=seed)
        else:
            how = dict(graph=graph)
        pruned = rgp_keras.prune_regular_graph(dense, calibration_data=data, **how, **options)
    seconds = time.perf_counter() - start
    one_shot = accuracy(pruned, test)
    fine_tune(pruned, train, seed, teacher)
    return one_shot, accuracy(pruned, test), seconds


def run_tfmot(dense, spec, sparsity, train, test, seed):
    """TF-MOT's magnitude pruning of the tf_keras twin of `dense`: one-shot masks, then one epoch."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    twin = build(tf_keras, spec)
    twin.set_weights(dense.get_weights())
    prunable = [layer for layer in twin.layers if isinstance(layer, (tf_keras.layers.Dense, tf_keras.layers.Conv2D))]
    chosen = {id(layer) for layer in prunable[1:-1]}
    # UpdatePruningStep numbers the first batch 1: masks are set there, then every 100 steps
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=1, frequency=100)
    # the twin's own layers (and trained weights) go into the pruned model, wrapped where chosen
    pruned = tf_keras.models.clone_model(twin, clone_function=lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=schedule) if id(layer) in chosen else layer)
    start = time.perf_counter()
    # One step at learning rate 0 with BatchNorm frozen: TF-MOT sets its masks, nothing else moves.
    for layer in pruned.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False
    pruned.compile(tf_keras.optimizers.SGD(0.0), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(train[0][:BATCH], train[1][:BATCH], epochs=1, batch_size=BATCH, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    _check_sparsity(pruned, sparsity)
    one_shot = accuracy(tfmot.sparsity.keras.strip_pruning(pruned), test)
    for layer in pruned.layers:
        layer.trainable = True
    steps = int(np.ceil(len(train[0]) / BATCH))
    pruned.compile(tf_keras.optimizers.Adam(tf_keras.optimizers.schedules.CosineDecay(FINE_TUNE_RATE, steps)),
                   tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(*train, epochs=1, batch_size=BATCH, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    _check_sparsity(pruned, sparsity)
    return one_shot, accuracy(tfmot.sparsity.keras.strip_pruning(pruned), test), seconds


def _check_sparsity(pruned, sparsity):
    kernels = [layer.pruning_vars[0][0].numpy() * layer.pruning_vars[0][1].numpy()
               for layer in pruned.layers if hasattr(layer, "pruning_vars")]
    reached = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    if reached < sparsity - 0.01:
        raise RuntimeError(f"TF-MOT reached sparsity {reached:.3f}, not {sparsity}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, help="run only this seed (a second process on the other core)")
    parser.add_argument("--work", default="/tmp/rgp-oneshot", help="cache of trained dense models")
    parser.add_argument("--cost", action="store_true", help="only measure the cost at 224x224 "
                                                            "(results/oneshot_cost.md)")
    parser.add_argument("--cost-one", nargs="+", metavar="MODEL IMAGES [METHOD]", help=argparse.SUPPRESS)
    parser.add_argument("--cost-channels", action="store_true", help="only measure prune_channels' cost on "
                                                                     "MobileNetV2 (results/channels_cost.md)")
    parser.add_argument("--equivalence", metavar="TREE", help="compare one-shot results with an older checkout "
                                                              "(results/oneshot_equivalence.md)")
    parser.add_argument("--equivalence-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cnn-epochs", type=int, default=1, help="dense CNN epochs for --equivalence")
    parser.add_argument("--speed", metavar="TREE", help="time the README snippet's and the demo's data-aware "
                                                        "pruning here and in an older checkout "
                                                        "(results/oneshot_speed.md)")
    parser.add_argument("--speed-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed:
        return speed(args.speed)
    if args.speed_one:
        return speed_one()
    if args.equivalence or args.equivalence_one:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        if args.equivalence_one:
            return equivalence_one(work, args.cnn_epochs)
        return equivalence(args.equivalence, work, args.cnn_epochs)
    if args.cost:
        return cost()
    if args.cost_one:
        return cost_one(args.cost_one[0], int(args.cost_one[1]), *args.cost_one[2:])
    if args.cost_channels:
        return channels_cost()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    train = ((x_train[..., None] / 255.0).astype("float32"), y_train)
    test = ((x_test[..., None] / 255.0).astype("float32"), y_test)
    finished = {(r["model"], r["method"], r["sparsity"], r["seed"]) for r in done_rows(CSV)}
    for name in args.models:
        setup = MODELS[name]
        for seed in [args.seed] if args.seed is not None else range(args.seeds):
            todo = [(s, m) for s in setup["graphs"] for m in METHODS
                    if m not in setup.get("skip", ()) and (name, m, str(s), str(seed)) not in finished]
            if not todo:
                continue
            dense = dense_model(name, seed, train, test, work)
            dense_accuracy = accuracy(dense, test)
            calibration = train[0][np.random.default_rng(seed).choice(len(train[0]), CALIBRATION, replace=False)]
            for sparsity, method in todo:
                if method == "TF-MOT magnitude":
                    result = run_tfmot(dense, ARCHITECTURES[setup["spec"]], sparsity, train, test, seed)
                else:
                    graph = optimize(RegularGraph.random(*setup["graphs"][sparsity], seed=seed), seed=seed).graph
                    result = run_rgp(method, dense, graph, calibration, train, test, seed)
                one_shot, tuned, seconds = result
                row = dict(model=name, method=method, sparsity=sparsity, seed=seed, dense=dense_accuracy,
                           one_shot=one_shot, fine_tuned=tuned,
                           prune_seconds=round(seconds, 2), calibration=CALIBRATION)
                append(CSV, FIELDS, row)
                print(row, flush=True)
    write(done_rows(CSV))


COST_RUNS = (("MobileNetV2", 512), ("MobileNetV2", 2048), ("ResNet50", 512), ("EfficientNetB0", 512))
COST_GOALS = {("MobileNetV2", 512): (90, 4), ("MobileNetV2", 2048): (None, 4), ("ResNet50", 512): (600, 6),
              ("EfficientNetB0", 512): (180, 4)}  # seconds, GB (issue 32)


def cost():
    """Time and peak memory of data-aware pruning at 224x224, each run in a process of its own."""
    import json
    import subprocess
    import sys

    rows = []
    for name, images in COST_RUNS:
        output = subprocess.run([sys.executable, __file__, "--cost-one", name, str(images)], check=True,
                                capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        seconds_goal, memory_goal = COST_GOALS[(name, images)]
        met = (seconds_goal is None or result["seconds"] <= seconds_goal) and result["peak_gb"] <= memory_goal
        rows.append(f"| {name} | {images} | {result['batch']} | {result['masked']} | {result['refit']} | "
                    f"{result['seconds']:.1f} | {'report' if seconds_goal is None else f'<= {seconds_goal}'} | "
                    f"{result['peak_gb']:.2f} | <= {memory_goal} | {result['baseline_gb']:.2f} | "
                    f"{'met' if met else 'not met'} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Cost of data-aware pruning (`python benchmarks/oneshot.py --cost`)", "",
        "`prune_regular_graph(model, sparsity=0.75, calibration_data=x)` (channel assignment + reconstruction, "
        "streamed in batches of `calibration_batch_size`, default) on Keras applications at 224x224x3 "
        "(`weights=None`), x uniform in [-1, 1]; each row a process of its own on an otherwise idle 2-core "
        "machine, CPU only. Peak memory is the process's peak resident set (ru_maxrss); 'before' is the same "
        "after building the model and x (x alone is 0.6 GB per 1000 images). Beyond 256 MB, the tensors kept "
        "between passes are written to a temporary folder.", "",
        "| model | images | batch | masked layers | layers refit | seconds | goal | peak GB | goal | GB before "
        "| met |", "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        "Before the streamed engine (issue 32): MobileNetV2 256 images 70.9 s and 11.1 GB, 512 images 616 s "
        "and 13.9 GB; ResNet50 128 images 752 s and 4.7 GB.", ""])
    (RESULTS / "oneshot_cost.md").write_text(text)


def channels_cost():
    """Time and peak memory of `prune_channels(keep=0.5)` with 512 calibration images on MobileNetV2 at 224x224
    (issue 29: <= 3 min, <= 6 GB), in a process of its own; writes results/channels_cost.md."""
    import json
    import subprocess
    import sys

    output = subprocess.run([sys.executable, __file__, "--cost-one", "MobileNetV2", "512", "channels"], check=True,
                            capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    met = result["seconds"] <= 180 and result["peak_gb"] <= 6
    text = "\n".join([
        "# Cost of data-aware channel pruning (`python benchmarks/oneshot.py --cost-channels`)", "",
        "`prune_channels(model, keep=0.5, calibration_data=x)` (the least-squares channel choice: one streamed "
        "pass measuring every reader's X^T X; then the readers' refit and BatchNorm re-measured: the "
        "reconstruction walk) on MobileNetV2 at 224x224x3 (`weights=None`), 512 images uniform in [-1, 1], "
        "default batch; a process of its own on an otherwise idle 2-core machine, CPU only. Peak memory: the "
        "process's peak resident set; 'before': the same after building the model and x.", "",
        "| model | images | batch | layers refit | seconds | goal | peak GB | goal | GB before | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| MobileNetV2 | 512 | {result['batch']} | {result['refit']} | {result['seconds']:.1f} | <= 180 | "
        f"{result['peak_gb']:.2f} | <= 6 | {result['baseline_gb']:.2f} | {'met' if met else 'not met'} |", ""])
    (RESULTS / "channels_cost.md").write_text(text)
    print(text)


def cost_one(name, images, method="rgp"):
    """One row of `cost` (`method` "rgp") or of `channels_cost` ("channels"): prints a JSON line."""
    import json
    import resource

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None)
    calibration = np.random.default_rng(0).random((images, 224, 224, 3), dtype=np.float32)  # no float64 copy
    calibration *= 2
    calibration -= 1  # in place: no more copies before the baseline is read
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "channels":
            pruned = rgp_keras.prune_channels(model, keep=0.5, calibration_data=calibration, verbose=0)
        else:
            pruned = rgp_keras.prune_regular_graph(model, sparsity=0.75, calibration_data=calibration, verbose=0)
    seconds = time.perf_counter() - start
    summary = rgp_keras.pruning_summary(pruned)
    from rgp_keras.data_aware.steps import checked_calibration

    print(json.dumps(dict(
        seconds=seconds, peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, baseline_gb=baseline,
        masked=sum(bool(row["graph"]) for row in summary), refit=sum("error_after" in row["data_aware"]
                                                                       for row in summary),
        batch=checked_calibration(model, calibration[:1]).batch_size)))


EQUIVALENCE_METHODS = ("RGP + reconstruction", "RGP + both")


def _run_with(python_path, *arguments):
    """The JSON line this script prints last when run with `arguments`, importing from `python_path` first."""
    import json
    import subprocess
    import sys

    output = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": python_path}).stdout
    return json.loads(output.strip().splitlines()[-1])


def _commit(tree):
    """The short commit hash checked out at `tree`."""
    import subprocess

    return subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def equivalence(tree, work, cnn_epochs):
    """One-shot accuracy of the data-aware methods with this checkout and with the one at `tree` (an older
    commit's work tree), on the same trained dense models, graphs and calibration samples (seed 0)."""
    results = {}
    for label, path in (("before", tree), ("now", str(Path(__file__).resolve().parents[1]))):
        results[label] = _run_with(path, "--equivalence-one", "--work", str(work), "--cnn-epochs", str(cnn_epochs))
    commit = _commit(tree)
    lines = ["# Streamed calibration gives the same one-shot results (`python benchmarks/oneshot.py --equivalence "
             "TREE`)", "",
             f"Seed 0, 512 calibration images; one-shot test accuracy (%) of the same trained dense models (MLP: "
             f"{MODELS['MLP']['epochs']} epochs, CNN: {cnn_epochs} epoch(s)) pruned with the same graphs, by "
             f"commit {commit} (before: every calibration sample held at once) and by this checkout (streamed "
             "in batches); prune time in seconds.", "",
             "| model | method | sparsity | before | now | difference (points) | seconds before | seconds now |",
             "|---|---|---|---|---|---|---|---|"]
    for key, before in results["before"].items():
        now = results["now"][key]
        model, method, sparsity = key.split("|")
        lines.append(f"| {model} | {method} | {float(sparsity):g} | {100 * before[0]:.2f} | {100 * now[0]:.2f} | "
                     f"{100 * (now[0] - before[0]):+.2f} | {before[1]:.1f} | {now[1]:.1f} |")
    (RESULTS / "oneshot_equivalence.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))


def equivalence_one(work, cnn_epochs):
    """The rows of `equivalence` with whichever rgp_keras is importable; prints a JSON line."""
    import json

    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    train = ((x_train[..., None] / 255.0).astype("float32"), y_train)
    test = ((x_test[..., None] / 255.0).astype("float32"), y_test)
    results = {}
    for name in MODELS:
        MODELS[name]["epochs"] = cnn_epochs if name == "CNN" else MODELS[name]["epochs"]
        dense = dense_model(name, 0, train, test, work)
        calibration = train[0][np.random.default_rng(0).choice(len(train[0]), CALIBRATION, replace=False)]
        for sparsity, (nodes, degree) in MODELS[name]["graphs"].items():
            graph = optimize(RegularGraph.random(nodes, degree, seed=0), seed=0).graph
            for method in EQUIVALENCE_METHODS:
                options = {key: value for key, value in RGP_OPTIONS[method].items() if key != "calibration"}
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pruned = rgp_keras.prune_regular_graph(dense, graph=graph, calibration_data=calibration,
                                                           **options)
                seconds = time.perf_counter() - start
                results[f"{name}|{method}|{sparsity}"] = (accuracy(pruned, test), seconds)
    print(json.dumps(results))


SPEED_REPEATS, SPEED_ROUNDS = 3, 2


def speed(tree):
    """Seconds of `prune_regular_graph(model, graph=G, calibration_data=x)` (the data-aware step: channel
    assignment and reconstruction; G fixed, so no graph search) on the README quickstart's model and the demo's,
    with this checkout and the one at `tree`, in alternating processes; medians over every repeat."""
    here = str(Path(__file__).resolve().parents[1])
    times = {"before": [], "now": []}
    for _ in range(SPEED_ROUNDS):
        for label, path in (("before", tree), ("now", here)):
            times[label].append(_run_with(f"{path}:{here}/examples", "--speed-one"))
    commit = _commit(tree)
    lines = ["# The data-aware step, before and after streamed calibration (`python benchmarks/oneshot.py --speed "
             "TREE`)", "",
             f"`prune_regular_graph(model, graph=G, calibration_data=x)` with a fixed random graph G (no graph "
             f"search: the data-aware step alone), untrained weights, x uniform in [0, 1); by commit {commit} "
             f"(before) and by this checkout (now), in alternating processes ({SPEED_ROUNDS} each, "
             f"{SPEED_REPEATS} calls per process); median seconds over the {SPEED_ROUNDS * SPEED_REPEATS} calls.",
             "", "| model | calibration | graph n/k | before (s) | now (s) | faster |", "|---|---|---|---|---|---|"]
    for name, (images, nodes, degree) in SPEED_MODELS.items():
        before, now = (float(np.median([t for run in times[label] for t in run[name]])) for label in times)
        lines.append(f"| {name} | {images} images | {nodes}/{degree} | {before:.1f} | {now:.1f} | "
                     f"{before / now:.2f}x |")
    (RESULTS / "oneshot_speed.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))


SPEED_MODELS = {"README quickstart CNN": (256, 32, 4), "demo small_cnn": (1024, 16, 2)}


def speed_one():
    """The calls of `speed` with whichever rgp_keras is importable; prints a JSON line."""
    import json

    from demo import small_cnn

    keras.utils.set_random_seed(0)
    layers = keras.layers
    models = {"README quickstart CNN": keras.Sequential([  # README.md's quickstart model
        keras.Input((28, 28, 1)), layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(128, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 3, padding="same", activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(128, activation="relu"), layers.Dense(10)]), "demo small_cnn": small_cnn()}
    import inspect

    quiet = {"verbose": 0} if "verbose" in inspect.signature(rgp_keras.prune_regular_graph).parameters else {}
    times = {}
    for name, (images, nodes, degree) in SPEED_MODELS.items():
        x = np.random.default_rng(0).random((images, 28, 28, 1)).astype("float32")
        graph = RegularGraph.random(nodes, degree, seed=0)
        times[name] = []
        for _ in range(SPEED_REPEATS):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rgp_keras.prune_regular_graph(models[name], graph=graph, calibration_data=x, **quiet)
            times[name].append(time.perf_counter() - start)
    print(json.dumps(times))


def write(rows):
    lines = ["# One-shot pruning with calibration data (`python benchmarks/oneshot.py`)", "",
             "Full Fashion-MNIST; 512 calibration images from the training set; test accuracy (%) right after "
             "pruning and after one fine-tuning epoch, mean ± std over seeds. Methods and budgets: see the "
             "script's docstring. \"–\": not run.", ""]
    for name in MODELS:
        model_rows = [r for r in rows if r["model"] == name]
        if not model_rows:
            continue
        setup = MODELS[name]
        seeds = sorted({r["seed"] for r in model_rows})
        dense = [float(r["dense"]) for r in model_rows if r["method"] == "RGP plain" and r["sparsity"] == "0.75"]
        graphs = ", ".join(f"{100 * s:g} %: n/k = {n}/{k}" for s, (n, k) in setup["graphs"].items())
        lines += [f"## {name} ({setup['spec']}; {graphs}; {len(seeds)} seed(s); dense "
                  f"{_stat(dense)} after {setup['epochs']} epochs)", ""]
        sparsities = sorted({r["sparsity"] for r in model_rows}, key=float)
        header = ["method"] + [f"{100 * float(s):g} % {when}" for s in sparsities for when in ("one-shot", "+1 epoch")]
        header.append("prune time (s)")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in [m for m in METHODS if any(r["method"] == m for r in model_rows)]:
            cells = [method]
            for sparsity in sparsities:
                chosen = [r for r in model_rows if r["method"] == method and r["sparsity"] == sparsity]
                cells.append(_stat([float(r["one_shot"]) for r in chosen]))
                cells.append(_stat([float(r["fine_tuned"]) for r in chosen if r["fine_tuned"] != ""]))
            times = [float(r["prune_seconds"]) for r in model_rows if r["method"] == method]
            cells.append(f"{np.median(times):.1f}" if times else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _goals(rows)
    (RESULTS / "oneshot.md").write_text("\n".join(lines))


# (model, sparsity, "one_shot"/"fine_tuned", compared with "dense"/"RGP plain", bound in points, text)
GOALS = [
    ("MLP", "0.875", "one_shot", "dense", -1.5, "MLP n = 64, k = 8, one-shot (assignment + reconstruction) within 1.5 "
                                                "points of dense"),
    ("MLP", "0.9375", "one_shot", "dense", -3.5, "MLP k = 4 one-shot within 3.5 points of dense"),
    ("MLP", "0.9375", "fine_tuned", "dense", -1.0, "MLP k = 4 after one epoch within 1.0 point of dense"),
    ("CNN", "0.75", "one_shot", "dense", -5.0, "CNN n = 16, 75 %, one-shot within 5 points of dense"),
    ("CNN", "0.75", "fine_tuned", "dense", -0.5, "CNN 75 % after one epoch within 0.5 point of dense"),
    ("CNN", "0.875", "fine_tuned", "RGP plain", 1.5, "CNN 87.5 % after one epoch >= 1.5 points above plain RGP"),
]


def _goals(rows):
    lines = ["## Goals (mean over seeds; the defaults, the MLP also with graph_candidates=4, and fine-tuning "
             "also distilled)", "",
             "| goal | method | reference | ours | reference's | difference (points) | met |",
             "|---|---|---|---|---|---|---|"]
    for model, sparsity, column, reference, bound, text in GOALS:
        chosen = [r for r in rows if r["model"] == model and r["sparsity"] == sparsity]
        methods = ["RGP + both", "RGP + both, best of 4 graphs"]
        if column == "fine_tuned":
            methods.append("RGP + both, distilled")
        pairs = [(method, reference) for method in methods]
        if reference == "RGP plain":  # distilled against plain fine-tuned alike, too
            pairs.append(("RGP + both, distilled", "RGP plain, distilled"))
        for method, against in pairs:
            ours = [float(r[column]) for r in chosen if r["method"] == method and r[column] != ""]
            if against == "dense":
                theirs = [float(r["dense"]) for r in chosen if r["method"] == method]
            else:
                theirs = [float(r[column]) for r in chosen if r["method"] == against and r[column] != ""]
            if not ours or not theirs:
                continue
            difference = 100 * (np.mean(ours) - np.mean(theirs))
            met = "met" if difference >= bound else "not met"
            lines.append(f"| {text} | {method} | {against} | {100 * np.mean(ours):.2f} | "
                         f"{100 * np.mean(theirs):.2f} | {difference:+.2f} | {met} |")
    return lines + [""]


def _stat(values):
    if not values:
        return "–"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


if __name__ == "__main__":
    main()
