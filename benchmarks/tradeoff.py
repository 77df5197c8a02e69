"""Accuracy per on-device latency: RGP against the structured alternatives users already have.

Full Fashion-MNIST (60k / 10k, the profile may take fewer training images). Per
model and seed a dense model is trained (budget D epochs), then at each sparsity
every method gets the same training budget after it, F epochs (from-scratch
methods train D + F epochs; in the full profile, fine-tuning starts from a
peak rate picked per model and method among RATES on seed 0, see
`probe_rates`; the quick and smoke profiles fine-tune from 5e-4, since their
epochs are 8x and 60x shorter and the full profile's rates do not carry over:
in one quick run with them on 15k images, discarded, the CNN's TF-MOT row fell
from 87.26 % at 5e-4 to 85.60 % at 4e-3):

  RGP plain + FT        the paper's mask on the trained weights (channel order kept), F epochs
  RGP data-aware        prune_regular_graph with 512 calibration images: channel assignment +
                        least-squares reconstruction, no training ("one-shot"); calibration_mixes=0, as
                        when the profile was started (the default now also fits on mixes of pairs of
                        the images: benchmarks/oneshot.py measures what that adds)
  RGP data-aware + FT   the same, F epochs
  RGP scratch           the paper's flow: masked from the start, density-aware init, D + F epochs
  TF-MOT magnitude      prune_low_magnitude on the tf_keras twin, polynomial decay 0 -> sparsity over 70 %
                        of F epochs (unstructured; exported with the converter's sparsity encoding)
  thin dense            every hidden layer's channels scaled by r so that MACs match RGP's compact model,
                        trained from scratch D + F epochs
  channels L1           rgp_keras.prune_channels(dense, keep=r) without data: the dense model with the
                        lowest-L1 output filters of every hidden layer removed (same r: same architecture
                        as thin dense; channels tied by residual Adds ranked together; Li et al. 2017),
                        no training
  channels L1 + FT      the same, F epochs (rows before the library had prune_channels were made by this
                        benchmark's own copy of the method, "L1 filters + FT", which built the same thin
                        model with its channels in another order: the same function)
  channels data-aware   prune_channels(dense, keep=r, calibration_data=512 images): channels chosen by
                        least squares (Optimal Brain Surgeon over channel blocks), every reader refit,
                        BatchNorm re-measured; no training
  channels data-aware + FT   the same, F epochs
  channels data-aware + distilled FT   the same, F epochs at that row's rate towards the dense model's class
                        distribution as well as the labels (as "planned + distilled FT")
  RGP wide              2x channels, masked from scratch at 1/4 of the density, so that its compact MACs
                        match (D + F epochs)
  planned               rgp_keras.prune_for_latency(dense, target, calibration_data=the 512 images): widths
                        and RGP graphs chosen per layer from LiteRT segment times measured here (table cached
                        in --work), target = thin dense's latency ratio on this machine: its architecture at
                        this sparsity's width exported and timed beside this seed's dense file in the same
                        run (weights play no part in the time; rows timed on another machine are not a
                        target: the same widths measured 0.53x on one machine and 0.60x on another); no
                        training
  planned + FT          the same plan, F epochs from its own probed rate (the probe fine-tunes seed 0's
                        87.5 % plan; the rows made before it used the rate probed for "channels data-aware
                        + FT", 8e-3 on the CNN, where a plan's one-shot accuracy then fell in the epoch)
  planned + distilled FT   the same plan, F epochs at planned + FT's rate towards the dense model's class distribution
                        as well as the labels: rgp_keras.distiller(plan, dense, temperature=4,
                        label_weight=0.5) (the best of five losses in a one-off IRN probe, +0.3 over labels)
  RGP data-aware + FT, n=N   (full profile) the same as RGP data-aware + FT on an N-node graph, N in
                        OTHER_NODES but auto's, where every layer auto masks carries it at the same sparsity
                        (same MACs, narrower or wider channel groups): does a finer graph buy accuracy?

Every RGP model but the n=N rows uses `nodes="auto"` (the sparsity exactly, on
the most nodes whose channel groups are >= 16 wide, see prune_regular_graph).
Where the layers allow no sparser graph than at an earlier sparsity (the IRN's
16-channel layers cap it at 16/2 = 87.5 %), only TF-MOT runs at the higher one:
the other rows would repeat. Every row is exported to its own .tflite (RGP: compact kernels) and timed against the
dense file in alternating rounds (LiteRT, 1 thread, median of ROUNDS ratios of medians); the size ratio is the
files', the MACs ratio the model's kept MACs (what its compact file runs where
export_tflite compacts every masked layer; layers it leaves dense run all theirs).

Models: CNN (VGG-BN, 32-128 channels, ~15 M MACs), MLP 784-512x3-10, IRN (a
MobileNetV2-style inverted-residual net for 28x28, ~5 M MACs).

Resumable: each finished row is appended to results/tradeoff.csv and rows
already there are skipped; dense models are cached in --work. Writes
results/tradeoff.md, tradeoff.png (quick profile) and tradeoff_full.png.

    python benchmarks/tradeoff.py --profile quick   # 28 min in one process on 2 cores
    python benchmarks/tradeoff.py --profile quick --jobs 2   # the models in 2 processes: noisier latency
    python benchmarks/tradeoff.py --profile full    # 3 seeds, all data; several runs if need be
    python benchmarks/tradeoff.py --profile full --seeds 2   # one seed (a second process on the other core)
    python benchmarks/tradeoff.py --profile full --models CNN MLP   # only these models' rows
    python benchmarks/tradeoff.py --report          # tables and plot from the CSV only

In the full profile, the fine-tuning rate probe (results/tradeoff_rates.csv)
runs first where rows are missing: 4 methods x 5 rates per model, about 1.5
hours on one core.
"""

import argparse
import multiprocessing
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from _results import append, done_rows, start

import rgp_keras
from rgp_keras.plots import new_figure

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "tradeoff.csv"
FIELDS = ["profile", "model", "method", "sparsity", "seed", "graph", "accuracy", "macs_ratio", "size_ratio",
          "latency_ratio", "epochs", "seconds"]
SPARSITIES = (0.75, 0.875, 0.9375)
METHODS = ("RGP plain + FT", "RGP data-aware", "RGP data-aware + FT", "RGP scratch", "TF-MOT magnitude",
           "thin dense", "channels L1", "channels L1 + FT", "channels data-aware", "channels data-aware + FT",
           "RGP wide", "planned", "planned + FT", "planned + distilled FT", "channels data-aware + distilled FT")
PROFILES = {
    # models in this order: with --jobs, the two longest start first
    # 1/8 of the training set: with every model and method, one process fits 30 min on this 2-core machine
    "quick": dict(train=7500, seeds=1, models=("CNN", "IRN", "MLP"), sparsities=(0.875,)),
    # the headline sparsity first: a run cut short (the profile spans sessions) still has it
    "full": dict(train=60000, seeds=3, models=("CNN", "MLP", "IRN"), sparsities=(0.875, 0.75, 0.9375),
                 other_graphs=True),
    "smoke": dict(train=1000, seeds=1, models=("CNN", "MLP", "IRN"), sparsities=(0.875,), other_graphs=True,
                  budget=dict(dense_epochs=1, epochs=1)),  # checks that every method runs; not reported
}
MODELS = {  # D: dense epochs, F: epochs after it; rates for Adam with cosine decay
    "CNN": dict(dense_epochs=6, epochs=1, rate=2e-3),
    "MLP": dict(dense_epochs=10, epochs=2, rate=1e-3),
    "IRN": dict(dense_epochs=8, epochs=1, rate=2e-3),
}
# Fine-tuning: Adam, cosine decay from a peak rate picked per model and method among RATES (`probe_rates`).
RATES = (5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
FINE_TUNED = ("RGP plain + FT", "RGP data-aware + FT", "TF-MOT magnitude", "channels L1 + FT",
              "channels data-aware + FT")
# the methods whose fine-tuning rate is probed (`probe_rates`)
PROBED = (*FINE_TUNED, "planned + FT")
# the rows whose model is the dense one thinned to the width of thin dense's MACs (`width_matching`)
THINNED = ("thin dense", "channels L1", "channels L1 + FT", "channels data-aware", "channels data-aware + FT",
           "channels data-aware + distilled FT")
RATES_CSV = RESULTS / "tradeoff_rates.csv"
# Full profile: RGP data-aware + FT also on these graph sizes where they differ from nodes="auto"'s (`other_graphs`)
OTHER_NODES = (16, 32, 64)
CALIBRATION = 512
BATCH = 128
ROUNDS = 5


# --- models, built alike in Keras 3 and tf_keras ---------------------------------------------------------

def build(K, name, width=1.0):
    """The `name` model for 28x28x1 inputs, every hidden layer's channels times `width`."""
    c = lambda channels: max(2, int(round(channels * width)))
    inputs = K.Input((28, 28, 1))
    if name == "MLP":
        x = K.layers.Flatten()(inputs)
        for _ in range(3):
            x = K.layers.Dense(c(512), activation="relu")(x)
        return K.Model(inputs, K.layers.Dense(10)(x), name="MLP")
    if name == "CNN":
        x = inputs
        for item in (32, "pool", 64, "pool", 128, 128):
            if item == "pool":
                x = K.layers.MaxPooling2D()(x)
            else:
                x = K.layers.Conv2D(c(item), 3, padding="same", use_bias=False)(x)
                x = K.layers.ReLU()(K.layers.BatchNormalization(momentum=0.9)(x))
        x = K.layers.GlobalAveragePooling2D()(x)
        return K.Model(inputs, K.layers.Dense(10)(x), name="CNN")
    if name == "IRN":
        def conv(x, channels, size=1, strides=1, relu=True):
            x = K.layers.Conv2D(channels, size, strides=strides, padding="same", use_bias=False)(x)
            x = K.layers.BatchNormalization(momentum=0.9)(x)
            return K.layers.ReLU(6.0)(x) if relu else x

        def block(x, expand, out, strides):
            y = conv(x, c(expand))
            y = K.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(y)
            y = K.layers.ReLU(6.0)(K.layers.BatchNormalization(momentum=0.9)(y))
            y = conv(y, c(out), relu=False)
            return K.layers.Add()([x, y]) if strides == 1 and x.shape[-1] == c(out) else y

        x = conv(inputs, c(16), 3)
        for expand, out, strides in ((64, 16, 2), (96, 24, 1), (96, 24, 1), (144, 32, 2), (192, 32, 1)):
            x = block(x, expand, out, strides)
        x = K.layers.GlobalAveragePooling2D()(conv(x, c(128)))
        return K.Model(inputs, K.layers.Dense(10)(x), name="IRN")
    raise ValueError(f"unknown model {name!r}")


def trained(model, train, epochs, rate, callbacks=(), teacher=None):
    """`model` fitted to the labels (with a `teacher`: half towards its class distribution at T = 4)."""
    steps = epochs * int(np.ceil(len(train[0]) / BATCH))
    fitted = model if teacher is None else rgp_keras.distiller(model, teacher, temperature=4.0, label_weight=0.5)
    fitted.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, steps)),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fitted.fit(*train, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=list(callbacks))
    return model


def accuracy(model, test):
    return float(np.mean(np.argmax(model.predict(test[0], batch_size=1000, verbose=0), axis=-1) == test[1]))


def macs(model):
    return rgp_keras.pruning_summary(model).totals


# --- the methods ----------------------------------------------------------------------------------------

def rgp(dense, sparsity, seed, **options):
    return rgp_keras.prune_regular_graph(dense, sparsity=sparsity, seed=seed, **options)


def data_aware(dense, sparsity, seed, calibration, nodes="auto"):
    """One-shot data-aware RGP as when the profile was started: no calibration mixes (see the docstring)."""
    return rgp(dense, sparsity, seed, nodes=nodes, calibration_data=calibration, calibration_mixes=0)


def other_graphs(dense, sparsity, seed, kept, auto):
    """The node counts of OTHER_NODES but `auto` whose graph gives `dense` the kept MACs `kept` (auto's): the same
    sparsity on every layer, in narrower or wider channel groups. A graph some layer is too narrow for (left
    dense: more MACs) or whose k / n is not the sparsity is left out."""
    found = []
    for nodes in OTHER_NODES:
        if nodes == auto:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "layers left dense": the MACs check below leaves the graph out
                model = rgp(dense, sparsity, seed, nodes=nodes, assign_channels=False)
        except ValueError:  # no layer can carry the graph
            continue
        if macs(model)["kept_macs"] == kept:
            found.append(nodes)
    return found


def width_matching(name, target_macs):
    """The width multiplier r whose dense model's MACs are nearest `target_macs` (bisection)."""
    low, high = 0.02, 1.0
    for _ in range(30):
        middle = (low + high) / 2
        if macs(build(keras, name, middle))["macs"] < target_macs:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def wide_rgp(name, target_macs, seed):
    """The 2x-wide model RGP-masked at the density whose compact MACs are nearest `target_macs` (None when
    no graph brings them within 1.25x).

    Kept MACs = the MACs of layers left dense + density x those of the masked
    ones; when the layers left dense by default (first and last) already
    exceed the target (the MLP's 784-input layer), the first is masked too.
    """
    wide = build(keras, name, 2.0)
    rows = [row for row in rgp_keras.pruning_summary(wide) if row["channels"] is not None]
    total = macs(wide)["macs"]
    for skip_first in (True, False):
        masked = sum(row["macs"] for row in rows[1 if skip_first else 0:-1])
        density = (target_macs - (total - masked)) / masked
        if density > 0.01:
            # the fewest nodes (widest channel groups, which XNNPACK's grouped convolution needs to be fast)
            # whose k = density x n is >= 2 and within 10 % of the density; powers of two give even groups
            narrowest = min(row["channels"] for row in rows[1 if skip_first else 0:-1])
            choices = [n for n in (8, 16, 32, 64) if n <= narrowest]
            fits = lambda n: round(density * n) >= 2 and abs(round(density * n) / n - density) <= 0.1 * density
            nodes = next((n for n in choices if fits(n)), choices[-1])
            degree = max(2, round(density * nodes))
            model = rgp_keras.prune_regular_graph(wide, degree=degree + degree * nodes % 2, nodes=nodes, seed=seed,
                                                  skip_first=skip_first, assign_channels=False)
            # k >= 2 on at most as many nodes as the narrowest layer has channels bounds the density from below
            return model if macs(model)["kept_macs"] <= 1.25 * target_macs else None
    return None  # the layers left dense alone exceed the target


def channels(dense, width, calibration=None):
    """The dense model thinned to `width` of every hidden channel space by the library: L1 filter norms without
    calibration images, least squares with them (`rgp_keras.prune_channels`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the few-rows warning of a Dense refit on 512 images: it is ridge-fitted
        return rgp_keras.prune_channels(dense, keep=width, calibration_data=calibration, verbose=0)


def tfmot_magnitude(name, dense, sparsity, seed, train, test, epochs, rate, path):
    """TF-MOT's magnitude pruning of the tf_keras twin during fine-tuning; exported with sparsity encoding."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    twin = build(tf_keras, name)
    twin.set_weights(dense.get_weights())
    prunable = [layer for layer in twin.layers if isinstance(layer, (tf_keras.layers.Dense, tf_keras.layers.Conv2D))
                and not isinstance(layer, tf_keras.layers.DepthwiseConv2D)]
    chosen = {id(layer) for layer in prunable[1:-1]}
    steps = epochs * int(np.ceil(len(train[0]) / BATCH))
    frequency = max(1, int(0.7 * steps) // 10)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, frequency=frequency,
                                                    end_step=frequency * max(1, int(0.7 * steps) // frequency))
    pruned = tf_keras.models.clone_model(twin, clone_function=lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=schedule) if id(layer) in chosen else layer)
    pruned.compile(tf_keras.optimizers.Adam(tf_keras.optimizers.schedules.CosineDecay(rate, steps)),
                   tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(*train, epochs=epochs, batch_size=BATCH, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path.write_bytes(converter.convert())
    names = {layer.name for layer in prunable[1:-1]}
    kernels = [layer.kernel.numpy() for layer in stripped.layers if layer.name in names]
    reached = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    if reached < sparsity - 0.01:
        raise RuntimeError(f"TF-MOT reached sparsity {reached:.3f}, not {sparsity}")
    return accuracy(stripped, test)


# --- measuring ------------------------------------------------------------------------------------------

def latency_ratio(path, dense_path):
    ratios = []
    for _ in range(ROUNDS):
        base = rgp_keras.benchmark_tflite(dense_path, threads=1)["median_ms"]
        ratios.append(rgp_keras.benchmark_tflite(path, threads=1)["median_ms"] / base)
    return statistics.median(ratios)


def fashion_mnist(images):
    (x_train, y_train), (x_test, y_test) = rgp_keras.load_fashion_mnist()
    prepare = lambda x: (x.astype("float32") / 255.0)[..., None]
    return (prepare(x_train[:images]), y_train[:images].astype("int64")), (prepare(x_test), y_test.astype("int64"))


def row_file(work, profile, name, seed, sparsity, method):
    """A row's own .tflite in `work` (equal_latency.py times them again)."""
    return work / f"{profile}-{name}-{seed}-{sparsity}-{method.replace(' ', '_').replace('@', 'at')}.tflite"


def dense_keras_file(work, profile, images, name, seed):
    """The trained dense model's .keras in `work`, keyed by the training images it saw (its .tflite beside it)."""
    return work / f"{profile}-{images}-{name}-{seed}-dense.keras"


def dense_files(profile, name, seed, work, train):
    """The trained dense model's .keras and .tflite paths in `work`, training and exporting it the first time."""
    dense_keras = dense_keras_file(work, profile, len(train[0]), name, seed)
    if not dense_keras.exists():
        budget = {**MODELS[name], **PROFILES[profile].get("budget", {})}
        keras.utils.set_random_seed(seed)
        started = time.perf_counter()
        model = trained(build(keras, name), train, budget["dense_epochs"], budget["rate"])
        model.save(dense_keras)
        rgp_keras.export_tflite(model, dense_keras.with_suffix(".tflite"))
        print(f"{name} seed {seed}: dense trained in {time.perf_counter() - started:.0f} s", flush=True)
    return dense_keras, dense_keras.with_suffix(".tflite")


def calibration_images(train, seed):
    return train[0][np.random.default_rng(seed).choice(len(train[0]), CALIBRATION, replace=False)]


def fine_tuned(method, name, dense, sparsity, seed, train, calibration, epochs, rate, width, nodes="auto"):
    """The model of `method` (one of FINE_TUNED but TF-MOT) after `epochs` epochs from peak rate `rate`.

    `width`: the channels' scale, the one whose MACs match RGP's compact model (`width_matching`);
    `nodes`: the RGP graph's (see `other_graphs`).
    """
    if method == "RGP plain + FT":
        model = rgp(dense, sparsity, seed, nodes=nodes, assign_channels=False)
    elif method == "RGP data-aware + FT":
        model = data_aware(dense, sparsity, seed, calibration, nodes)
    else:  # channels L1 / data-aware + FT
        model = channels(dense, width, calibration if "data-aware" in method else None)
    return trained(model, train, epochs, rate)


def saved_plan(work, profile, name, seed, sparsity, dense, dense_file, kept, calibration, reuse):
    """(The .keras file of `prune_for_latency`'s model for this row, its target): with `reuse` the plan saved
    before (when there is one), else planned now (its plan printed, the segment times kept in `work`) at thin
    dense's latency ratio timed now (`thin_latency`) and saved, its target beside it. Raises ValueError for a
    target below what the model can reach."""
    path = work / f"plan-{profile}-{name}-{seed}-{sparsity}.keras"
    target_file = path.with_suffix(".target")
    if reuse and path.exists() and target_file.exists():
        return path, float(target_file.read_text())
    target = thin_latency(name, kept, dense_file, work)
    model, plan = rgp_keras.prune_for_latency(dense, target, calibration_data=calibration,
                                              cache_dir=work / f"latency-table-{name}", verbose=0)
    print(plan, flush=True)
    model.save(path)
    target_file.write_text(repr(target))
    return path, target


def thin_latency(name, kept, dense_file, work):
    """Thin dense's latency ratio on this machine now: the model of `name` at the width whose MACs are `kept`,
    exported untrained (its file runs as the trained one's) and timed beside `dense_file`."""
    width = width_matching(name, kept)
    path = work / f"thin-{name}-{width:.3f}.tflite"
    rgp_keras.export_tflite(build(keras, name, width), path)
    return latency_ratio(path, dense_file)


def probe_rates(work, models):
    """Every fine-tuned method (`PROBED`) at every rate of RATES: full data, seed 0, 87.5 %, test accuracy to
    RATES_CSV. "planned + FT" fine-tunes the plan of seed 0 at 87.5 % (the "planned" row's when it has been
    made, else one made here and saved, which that row then replaces).

    The runs pick each model and method's rate from these (`chosen_rates`);
    the choice is made on seed 0's test accuracy, so only seeds 1 and 2 are
    independent of it.
    """
    done = {(r["model"], r["method"], r["rate"]) for r in done_rows(RATES_CSV)}
    train, test = fashion_mnist(PROFILES["full"]["train"])
    calibration, seed, sparsity = calibration_images(train, 0), 0, 0.875
    for name in models:
        todo = [(m, r) for m in PROBED for r in RATES if (name, m, str(r)) not in done]
        if not todo:
            continue
        dense_keras, dense_file = dense_files("full", name, seed, work, train)
        dense = keras.saving.load_model(dense_keras)
        kept = macs(rgp(dense, sparsity, seed, assign_channels=False))["kept_macs"]
        width = width_matching(name, kept)
        epochs = MODELS[name]["epochs"]
        for method, rate in todo:
            keras.utils.set_random_seed(seed)
            if method == "planned + FT":
                path, _ = saved_plan(work, "full", name, seed, sparsity, dense, dense_file, kept, calibration, True)
                result = accuracy(trained(keras.saving.load_model(path), train, epochs, rate), test)
            elif method == "TF-MOT magnitude":
                result = tfmot_magnitude(name, dense, sparsity, seed, train, test, epochs, rate, work / "probe.tflite")
            else:
                result = accuracy(fine_tuned(method, name, dense, sparsity, seed, train, calibration, epochs, rate,
                                             width), test)
            append(RATES_CSV, ["model", "method", "sparsity", "seed", "epochs", "rate", "accuracy"],
                   dict(model=name, method=method, sparsity=sparsity, seed=seed, epochs=epochs, rate=rate,
                        accuracy=round(result, 4)))
            print(f"rates: {name} {method:22s} {rate:g} acc {result:.4f}", flush=True)


def probed():
    """(model, method) -> {rate: test accuracy} from the rate probe's CSV."""
    found = {}
    for row in done_rows(RATES_CSV):
        found.setdefault((row["model"], row["method"]), {})[float(row["rate"])] = float(row["accuracy"])
    return found


def chosen_rates(found):
    """(model, method) -> the rate of RATES with the best accuracy in `found`, for the pairs probed at every rate."""
    return {key: max(by_rate, key=by_rate.get) for key, by_rate in found.items() if set(by_rate) >= set(RATES)}


def run(profile, work, seeds=None, models=None, methods=None):
    settings = PROFILES[profile]
    work.mkdir(parents=True, exist_ok=True)
    rates = {(name, method): RATES[0] for name in MODELS for method in PROBED}
    if profile == "full":  # the rates are probed on full data: shorter epochs want others (see the docstring)
        probe_rates(work, models or settings["models"])
        rates.update(chosen_rates(probed()))
    train, test = fashion_mnist(settings["train"])
    done = {(r["profile"], r["model"], r["method"], r["sparsity"], r["seed"]) for r in done_rows(CSV)}
    # seed outermost: a run cut short (the full profile spans sessions) has every model at seed 0
    for seed in seeds or range(settings["seeds"]):
        for name in models or settings["models"]:
            budget = {**MODELS[name], **settings.get("budget", {})}
            def record(method, sparsity, accuracy_, path, graph="", epochs=0, seconds=0.0, kept_macs=None):
                row = dict(profile=profile, model=name, method=method, sparsity=sparsity, seed=seed, graph=graph,
                           accuracy=round(accuracy_, 4),
                           macs_ratio=round(kept_macs / dense_macs, 4) if kept_macs is not None else "",
                           size_ratio=round(path.stat().st_size / dense_file.stat().st_size, 4),
                           latency_ratio=round(latency_ratio(path, dense_file), 4) if method != "dense" else 1.0,
                           epochs=epochs, seconds=round(seconds, 1))
                append(CSV, FIELDS, row)
                done.add((profile, name, method, str(sparsity), str(seed)))
                print(f"{name} seed {seed} {sparsity} {method:22s} acc {row['accuracy']:.4f}  MACs {row['macs_ratio']}"
                      f"  latency {row['latency_ratio']}  size {row['size_ratio']}", flush=True)

            def record_model(method, sparsity, model, epochs, started, graph=""):
                """Test accuracy, export to the row's own .tflite and `record`; RGP rows' `graph` is read back."""
                summary = rgp_keras.pruning_summary(model)
                if summary.graph is not None:
                    graph = f"{summary.graph.nodes}/{summary.graph.degree}"
                result = accuracy(model, test)
                path = row_file(work, profile, name, seed, sparsity, method)
                rgp_keras.export_tflite(model, path)
                record(method, sparsity, result, path, graph, epochs, time.perf_counter() - started,
                       summary.totals["kept_macs"])

            dense_keras, dense_file = dense_files(profile, name, seed, work, train)
            dense = keras.saving.load_model(dense_keras)
            dense_macs = macs(dense)["macs"]
            if (profile, name, "dense", "0.0", str(seed)) not in done:
                record("dense", 0.0, accuracy(dense, test), dense_file, epochs=budget["dense_epochs"],
                       kept_macs=dense_macs)
            calibration = calibration_images(train, seed)
            first_with = {}  # RGP's kept MACs -> the first sparsity that gave them
            plans = {}  # sparsity -> (the "planned" row's model saved, its target), for the rows that fine-tune it
            for sparsity in settings["sparsities"]:
                todo = [m for m in methods or METHODS if (profile, name, m, str(sparsity), str(seed)) not in done]
                # always measured: a resumed run must still see that an earlier sparsity had these MACs
                plain = rgp(dense, sparsity, seed, assign_channels=False)
                kept = macs(plain)["kept_macs"]
                same = first_with.setdefault(kept, sparsity)
                if same != sparsity:  # nodes="auto" capped the sparsity: every MACs-matched row would repeat
                    print(f"{name} seed {seed} {sparsity}: its layers allow no sparser graph than at {same}; "
                          "only TF-MOT runs", flush=True)
                    todo = [m for m in todo if m == "TF-MOT magnitude"]
                for method in todo:
                    keras.utils.set_random_seed(seed)
                    started = time.perf_counter()
                    epochs, graph, width = budget["epochs"], "", None
                    if method == "TF-MOT magnitude":
                        path = row_file(work, profile, name, seed, sparsity, method)
                        result = tfmot_magnitude(name, dense, sparsity, seed, train, test, epochs,
                                                 rates[(name, method)], path)
                        # unstructured: LiteRT computes every MAC (no MACs ratio)
                        record(method, sparsity, result, path, epochs=epochs, seconds=time.perf_counter() - started)
                        continue
                    if method in THINNED:  # the width whose MACs match RGP's compact model
                        width = width_matching(name, kept)
                        graph = f"width {width:.3f}"
                    if method in FINE_TUNED:
                        model = fine_tuned(method, name, dense, sparsity, seed, train, calibration, epochs,
                                           rates[(name, method)], width)
                    elif method == "RGP data-aware":
                        model = data_aware(dense, sparsity, seed, calibration)
                        epochs = 0
                    elif method == "channels data-aware + distilled FT":
                        model = trained(channels(dense, width, calibration), train, epochs,
                                        rates[(name, "channels data-aware + FT")], teacher=dense)
                    elif method in ("channels L1", "channels data-aware"):
                        model = channels(dense, width, calibration if method == "channels data-aware" else None)
                        epochs = 0
                    elif method.startswith("planned"):
                        if sparsity not in plans:  # one plan per sparsity: the fine-tuned rows start from it
                            recorded = (profile, name, "planned", str(sparsity), str(seed)) in done
                            try:  # a resumed run fine-tunes the plan its "planned" row recorded
                                plans[sparsity] = saved_plan(work, profile, name, seed, sparsity, dense, dense_file,
                                                             kept, calibration, reuse=recorded)
                            except ValueError as error:  # a target below what the model can reach
                                print(f"{name} seed {seed} {sparsity} {method}: {error}; no row", flush=True)
                                continue
                        path, target = plans[sparsity]
                        graph = f"target {target:.3f}"
                        model = keras.saving.load_model(path)  # each row fine-tunes a copy
                        if method == "planned":
                            epochs = 0
                        else:
                            model = trained(model, train, epochs, rates[(name, "planned + FT")],
                                            teacher=dense if method == "planned + distilled FT" else None)
                    elif method == "RGP scratch":
                        model = rgp(build(keras, name), sparsity, seed, assign_channels=False)
                        rgp_keras.reinitialize(model, seed=seed)
                        epochs = budget["dense_epochs"] + budget["epochs"]
                        model = trained(model, train, epochs, budget["rate"])
                    elif method == "RGP wide":
                        model = wide_rgp(name, kept, seed)
                        if model is None:
                            print(f"{name} seed {seed} {sparsity} RGP wide: no graph brings it within 1.25x of the "
                                  "target MACs; no row", flush=True)
                            continue
                        rgp_keras.reinitialize(model, seed=seed)
                        epochs = budget["dense_epochs"] + budget["epochs"]
                        model = trained(model, train, epochs, budget["rate"])
                    else:  # thin dense
                        epochs = budget["dense_epochs"] + budget["epochs"]
                        model = trained(build(keras, name, width), train, epochs, budget["rate"])
                    record_model(method, sparsity, model, epochs, started, graph)
                if not settings.get("other_graphs") or same != sparsity or methods:
                    continue
                auto = rgp_keras.pruning_summary(plain).graph.nodes
                for nodes in other_graphs(dense, sparsity, seed, kept, auto):
                    method = f"RGP data-aware + FT, n={nodes}"
                    if (profile, name, method, str(sparsity), str(seed)) in done:
                        continue
                    keras.utils.set_random_seed(seed)
                    started = time.perf_counter()
                    model = fine_tuned("RGP data-aware + FT", name, dense, sparsity, seed, train, calibration,
                                       budget["epochs"], rates[(name, "RGP data-aware + FT")], None, nodes)
                    record_model(method, sparsity, model, budget["epochs"], started)


def run_in_parallel(profile, work, seeds, models, jobs, methods=None):
    """`run` with each model in a process of its own, `jobs` at a time in the profile's order, each with
    cores / jobs TensorFlow threads. Each process appends its rows to the CSV as it finishes them."""
    start(CSV, FIELDS)  # one header, not one per process
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))  # read by the children's TF
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        pool.starmap(run, [(profile, work, seeds, [name], methods) for name in models or PROFILES[profile]["models"]],
                     chunksize=1)


# --- report ---------------------------------------------------------------------------------------------

def report():
    rows = done_rows(CSV)
    groups = {}
    for row in rows:
        key = (row["profile"], row["model"], float(row["sparsity"]), row["method"])
        groups.setdefault(key, []).append(row)
    stat = lambda values: (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    lines = [
        "# Accuracy per LiteRT latency (Fashion-MNIST)",
        "",
        "`python benchmarks/tradeoff.py --profile PROFILE` (see its docstring for every method and budget). "
        "Accuracy on the 10k test images, mean +- std over seeds; latency = 1-thread LiteRT median of this "
        f"row's own .tflite / the dense file's, median of {ROUNDS} alternating rounds; size from the same "
        "files; MACs: the model's kept MACs (layers the export leaves dense run all theirs). "
        "D / F = dense / fine-tuning epochs: " + ", ".join(
            f"{name} D={b['dense_epochs']} F={b['epochs']}" for name, b in MODELS.items()) + ".",
        "",
    ]
    for profile in sorted({key[0] for key in groups}):
        lines += [f"## Profile `{profile}` (train images: {PROFILES[profile]['train']})", "",
                  "| model | sparsity | method | graph / width | seeds | accuracy (%) | latency | MACs | size |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key in sorted(k for k in groups if k[0] == profile):
            members = groups[key]
            mean, std = stat([100 * float(r["accuracy"]) for r in members])
            median = lambda field: statistics.median(float(r[field]) for r in members if r[field] != "")
            macs_values = [float(r["macs_ratio"]) for r in members if r["macs_ratio"] != ""]
            lines.append(
                f"| {key[1]} | {key[2]:g} | {key[3]} | {members[0]['graph']} | {len(members)} | {mean:.2f} +- "
                f"{std:.2f} "
                f"| {median('latency_ratio'):.3f} | {statistics.median(macs_values):.3f} | "
                f"{median('size_ratio'):.3f} |" if macs_values else
                f"| {key[1]} | {key[2]:g} | {key[3]} | {members[0]['graph']} | {len(members)} | {mean:.2f} +- "
                f"{std:.2f} "
                f"| {median('latency_ratio'):.3f} | - | {median('size_ratio'):.3f} |"
            )
        lines.append("")
        if any(key[0] == profile and key[3].startswith("planned") for key in groups):
            lines += ["Each row's latency was timed on the machine that made it, and one file times differently on "
                      "two (the MLP's thin dense at width 0.638: 0.79x on its rows' machine, 0.26-0.29x on the "
                      "planned rows'). A planned row's target (graph / width) is thin dense's architecture timed "
                      "beside the dense file on the planner's machine, in the same run: compare it with thin dense "
                      "and the channel rows (the same architecture) at that target, not by the latency columns. "
                      "The plot draws the channel rows at thin dense's latency in this table and planned rows at "
                      "their measured ratio to the target times it.", ""]
        for model in sorted({key[1] for key in groups if key[0] == profile}):
            methods = {}
            for key in groups:
                if key[:2] == (profile, model) and key[2]:
                    methods.setdefault(key[2], set()).add(key[3])
            for sparsity in sorted(s for s, found in methods.items() if found == {"TF-MOT magnitude"}):
                lines += [f"{model} at {100 * sparsity:g} %: nodes=\"auto\" allows no sparser graph for its layers "
                          "than at a lower sparsity (its RGP, thin dense and L1 rows would repeat those), so only "
                          "TF-MOT runs there.", ""]
    lines += rates_table()
    (RESULTS / "tradeoff.md").write_text("\n".join(lines) + "\n")
    for profile, name in (("quick", "tradeoff.png"), ("full", "tradeoff_full.png")):
        plot(groups, profile, RESULTS / name)
    print("\n".join(lines))


def rates_table():
    """The fine-tuning rate probe (`probe_rates`) as a Markdown table: accuracy per rate, the chosen one in bold."""
    found = probed()
    if not found:
        return []
    chosen = chosen_rates(found)
    lines = ["## Fine-tuning rates", "",
             "Peak rate of the fine-tuning (Adam, cosine decay over the F epochs) for each model and method: the "
             "best of these on seed 0 at 87.5 %, full data (test accuracy %, chosen in bold; seeds 1 and 2 are "
             "independent of the choice). The full profile's rows above use them; the quick profile fine-tunes "
             "from 5e-4.",
             "", "| model | method | " + " | ".join(f"{rate:g}" for rate in RATES) + " |",
             "|---|---|" + "---|" * len(RATES)]
    for (model, method), by_rate in sorted(found.items()):
        cells = [("**{:.2f}**" if chosen.get((model, method)) == rate else "{:.2f}").format(100 * by_rate[rate])
                 if rate in by_rate else "–" for rate in RATES]
        lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def plotted_latency(groups, key):
    """The median latency ratio of `groups[key]`, on the scale of the thin dense rows for the rows that can be
    put on it: THINNED rows (thin dense's architecture) at thin dense's, a planned row at its measured ratio to
    its target (thin dense's architecture timed beside the dense file on the planner's machine) times thin
    dense's. Rows were timed on the machines that made them, and one file times differently on two (the MLP's
    thin dense: 0.79x on its rows' machine, 0.26-0.29x on the planned rows'), so rows compare through thin
    dense's architecture, timed on both."""
    members = groups[key]
    latency = statistics.median(float(r["latency_ratio"]) for r in members)
    thin = groups.get((*key[:3], "thin dense"))
    if not thin or not (key[3] in THINNED or key[3].startswith("planned")):
        return latency
    scale = statistics.median(float(r["latency_ratio"]) for r in thin)
    if key[3] in THINNED:
        return scale
    return latency / statistics.median(float(r["graph"].split()[1]) for r in members) * scale


def plot(groups, profile, path):
    models = sorted({key[1] for key in groups if key[0] == profile})
    if not models:
        return
    figure = new_figure(figsize=(5 * len(models), 4.5))
    methods = ("dense", *METHODS)
    markers, colors = dict(zip(methods, "*osD^vxPh<>pdXH8")), {m: f"C{i}" for i, m in enumerate(methods)}
    for axes, name in zip(np.atleast_1d(figure.subplots(1, len(models))), models):
        points = []
        for key, members in groups.items():
            if key[0] != profile or key[1] != name:
                continue
            latency = plotted_latency(groups, key)
            acc = 100 * statistics.mean(float(r["accuracy"]) for r in members)
            points.append((latency, acc))
            method, other_graph = key[3].split(", n=")[0], ", n=" in key[3]  # other graphs: hollow markers
            label = f"{method}, other n" if other_graph else method
            style = dict(facecolors="none", edgecolors=colors[method]) if other_graph else dict(color=colors[method])
            axes.scatter(latency, acc, marker=markers[method], s=40, **style,
                         label=label if label not in axes.get_legend_handles_labels()[1] else None)
            if key[2]:  # several sparsities share a panel: each point says its own
                axes.annotate(f"{100 * key[2]:g}%", (latency, acc), fontsize=6, xytext=(4, -3),
                              textcoords="offset points")
        front, best = [], -1.0
        for latency, acc in sorted(points):
            if acc > best:
                front.append((latency, acc))
                best = acc
        axes.plot(*zip(*front), color="gray", linestyle="--", linewidth=1, label="Pareto front")
        # one-shot rows far below (L1 without data: ~10 %) would squeeze every other point into a line
        low = best - 6.0
        below = sorted({key[3] for key, members in groups.items() if key[:2] == (profile, name)
                        and 100 * statistics.mean(float(r["accuracy"]) for r in members) < low})
        axes.set_ylim(low, best + 0.5)
        axes.set_title(f"{name} ({profile} profile; labels: sparsity)")
        axes.set_xlabel("LiteRT latency / dense (1 thread)" +
                        (f"\n(below {low:.1f} %, not shown: {', '.join(below)})" if below else ""), fontsize=8)
        axes.set_ylabel("test accuracy (%)")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rgp-tradeoff"), help="dense models and .tflite files")
    parser.add_argument("--report", action="store_true", help="only write the tables and plot from the CSV")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run only these seeds (one process per core: `--seeds 1` beside `--seeds 2`)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), help="run only these models")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="run only these methods")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once, one process each (one per core)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be a whole number >= 1, got {args.jobs}")
    if not args.report:
        if args.jobs > 1:
            run_in_parallel(args.profile, args.work, args.seeds, args.models, args.jobs, args.methods)
        else:
            run(args.profile, args.work, args.seeds, args.models, args.methods)
    report()


if __name__ == "__main__":
    main()
