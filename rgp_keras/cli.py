"""The `rgp` command line tool."""

import argparse
import contextlib
import os
import re
import sys

import rgp_keras
from rgp_keras.errors import InputError, InputValueError

_EXAMPLES = {
    "graph": "example: rgp graph --nodes 64 --sparsity 0.875 --seed 0 --time-limit 10 --out graph.npz",
    "prune": "examples: rgp prune model.keras --sparsity 0.875 --nodes 64 -o pruned.keras\n"
             "          rgp prune model.keras --channels 0.5 --calibration x.npy -o thin.keras",
    "plan": "example: rgp plan model.keras --latency 0.35 --calibration x.npy -o fast.keras",
    "summary": "example: rgp summary pruned.keras",
    "export": "example: rgp export pruned.keras -o model.tflite --quantize int8 --calibration samples.npy",
    "bench": "example: rgp bench dense.tflite pruned.tflite --rounds 9 --threads 1",
    "bench-layers": "example (on the target device): rgp bench-layers model.keras -o table.json --threads 4",
    "plot": "examples: rgp plot aspl graph.npz -o aspl.png; rgp plot layers pruned.keras -o layers.png",
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _word_or(number, words, expected):
    """An argparse type: one of `words` as it is, else `number(text)`."""

    def parse(text):
        if text in words:
            return text
        try:
            return number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


_auto_or_int = _word_or(int, ("auto",), "an integer or 'auto'")
_objective = _word_or(float, ("min", "max"), "'min', 'max' or a target ASPL")


def _graph(args):
    from rgp_keras.graph import RegularGraph, auto_symmetry, degree_for_sparsity, optimize, warn_if_sparsity_differs

    if not args.out.endswith(".npz"):
        raise InputValueError(f"--out must end in .npz (a graph file is a NumPy archive), got {args.out}")
    degree = args.degree
    if degree is None:
        degree = degree_for_sparsity(args.nodes, args.sparsity)
        warn_if_sparsity_differs(args.sparsity, args.nodes, degree)
    symmetry = auto_symmetry(args.nodes, degree, args.objective) if args.symmetry == "auto" else args.symmetry
    start = RegularGraph.random(args.nodes, degree, seed=args.seed, symmetry=symmetry)
    result = optimize(
        start,
        args.objective,
        attempts=args.attempts,
        time_limit=args.time_limit,
        seed=args.seed,
        jobs=args.jobs,
        symmetry=symmetry,
        progress=not (args.quiet or args.json),
    )
    graph = result.graph
    if args.plot:
        from rgp_keras.plots import plot_aspl_history

        plot_aspl_history(
            {f"n={graph.nodes}, k={graph.degree}": result.history},
            args.plot,
            moore_bound=graph.moore_bound,
        )
    graph.save(args.out)
    if args.json:
        return _print_json(
            nodes=graph.nodes, degree=graph.degree, sparsity=graph.sparsity, aspl_before=start.aspl, aspl=graph.aspl,
            diameter=graph.diameter, moore_bound=graph.moore_bound, gap=graph.gap, attempts=result.attempts,
            symmetry=result.symmetry,
            seconds=result.elapsed, path=args.out,
        )
    print(
        f"nodes {graph.nodes}  degree {graph.degree}  sparsity {graph.sparsity:.4f}  symmetry {result.symmetry}\n"
        f"ASPL {start.aspl:.4f} -> {graph.aspl:.4f}  diameter {start.diameter} -> {graph.diameter}\n"
        f"Moore bound {graph.moore_bound:.4f}  gap {100 * graph.gap:.2f}%\n"
        f"{result.attempts} attempts in {result.elapsed:.2f}s -> {args.out}"
    )


def _load_keras_model(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file: {path}")
    if not str(path).endswith(".keras"):
        raise InputValueError(f"{path} is not a .keras file; save the model with model.save('model.keras').")
    import keras

    try:
        # compile=False: the commands need no optimizer, and one saved under JAX or torch would import that backend
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as error:  # a corrupt file or a model of unknown classes
        raise InputValueError(f"Keras cannot load {path}: {error}") from None


def _prune(args):
    from rgp_keras.channels.prune import prune_channels
    from rgp_keras.masking.summary import pruning_summary
    from rgp_keras.prune import prune_regular_graph

    if not args.output.endswith(".keras"):
        raise InputValueError(f"-o/--output must end in .keras, got {args.output}")
    masks = any(value is not None for value in (args.sparsity, args.degree, args.graph))
    channels = args.channels is not None or args.channels_macs is not None
    if not masks and not channels:
        raise InputValueError("pass --sparsity, --degree or --graph (RGP masks), --channels or --channels-macs "
                              "(fewer channels), or both (channels first); for a latency, `rgp plan`")
    for option, value, default in (("--graph-candidates", args.graph_candidates, 1),
                                   ("--keep-channel-order", args.keep_channel_order, False)):
        if value != default and not masks:
            raise InputValueError(f"{option} needs --sparsity, --degree or --graph")
    model = _load_keras_model(args.model)
    for option, value, default in (("--calibration-samples", args.calibration_samples, None),
                                   ("--calibration-mixes", args.calibration_mixes, "auto"),
                                   ("--calibration-batch-size", args.calibration_batch_size, None)):
        if value != default and not args.calibration:
            raise InputValueError(f"{option} needs --calibration")
    if args.graph and args.nodes is not None:
        raise InputValueError("--nodes conflicts with --graph: the graph file has its own node count; pass one of them")
    samples = None
    if args.calibration:
        samples = _calibration(args.calibration, model.inputs[0].shape, args.calibration_samples)
    calibration = dict(calibration_data=samples, calibration_samples=args.calibration_samples,
                       calibration_mixes=args.calibration_mixes, calibration_batch_size=args.calibration_batch_size)
    pruned = model
    if channels:
        pruned = prune_channels(pruned, keep=args.channels, macs=args.channels_macs, **calibration)
    if masks:
        pruned = prune_regular_graph(
            pruned, sparsity=args.sparsity, degree=args.degree, graph=args.graph,
            nodes="auto" if args.nodes is None else args.nodes, seed=args.seed, **calibration,
            assign_channels=not args.keep_channel_order, graph_candidates=args.graph_candidates,
        )
    pruned.save(args.output)
    if not args.quiet:
        print(pruning_summary(pruned))
    print(f"-> {args.output}")


def _plan(args):
    _on_tensorflow()
    from rgp_keras.plan.search import prune_for_latency

    if args.output is not None and not args.output.endswith(".keras"):
        raise InputValueError(f"-o/--output must end in .keras, got {args.output}")
    model = _load_keras_model(args.model)
    samples = _calibration(args.calibration, model.inputs[0].shape, args.calibration_samples)
    pruned, plan = prune_for_latency(model, args.latency, calibration_data=samples, threads=args.threads,
                                     latency_table=args.table, calibration_samples=args.calibration_samples,
                                     calibration_batch_size=args.calibration_batch_size,
                                     verbose=0 if args.json else "auto")
    if args.output is not None:
        pruned.save(args.output)
    if args.json:
        return _print_json(target=plan.target, dense_ms=plan.dense_ms, predicted_ms=plan.predicted_ms,
                           threads=plan.threads, layers=plan.rows, plans=list(plan.candidates), output=args.output)
    print(plan)
    if args.output is not None:
        print(f"-> {args.output}")


def _summary(args):
    from rgp_keras.masking.summary import pruning_summary

    summary = pruning_summary(_load_keras_model(args.model))
    if args.json:
        return _print_json(layers=list(summary), totals=summary.totals)
    print(summary)


def _print_json(**fields):
    import json

    print(json.dumps(fields, default=lambda value: value.item() if hasattr(value, "item") else str(value)))


def _on_tensorflow():
    """LiteRT conversion (export, timing segments) runs through TensorFlow; a .keras file saved under any backend
    loads there. Sets the backend unless Keras is imported already."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"


def _export(args):
    _on_tensorflow()
    from rgp_keras.export import export_tflite

    model = _load_keras_model(args.model)
    if args.calibration and args.quantize != "int8":
        raise InputValueError("--calibration is only used with --quantize int8")
    if args.sparse and (args.layout != "auto" or args.threads != 1):
        raise InputValueError("--layout and --threads choose compact kernels; they do not apply with --sparse")
    if args.quantize == "int8" and not args.calibration:
        raise InputValueError("--quantize int8 needs --calibration samples.npy|DIR (a few hundred model inputs)")
    samples = _calibration(args.calibration, model.inputs[0].shape, 500) if args.calibration else None
    report = export_tflite(
        model, args.output, compact=not args.sparse, quantize=args.quantize, representative_data=samples,
        layout=args.layout, threads=args.threads, latency_table=args.table,
    )
    if args.json:
        import dataclasses

        return _print_json(**dataclasses.asdict(report))
    print(report)


def _calibration(path, input_shape, samples=None):
    """Calibration samples from a .npy file or a folder of images (scaled to [0, 1]); at most `samples` images."""
    import numpy as np

    if os.path.isdir(path):
        import keras

        files = sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_SUFFIXES))
        if not files:
            raise InputValueError(f"--calibration folder {path} has no images ({', '.join(_IMAGE_SUFFIXES)})")
        height, width, channels = input_shape[1:]
        mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]
        return np.stack([
            keras.utils.img_to_array(keras.utils.load_img(os.path.join(path, f), color_mode=mode,
                                                          target_size=(height, width))) / 255.0
            for f in files[:samples]
        ])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such calibration file or folder: {path}")
    if not path.endswith(".npy"):
        raise InputValueError(f"--calibration must be a .npy file of input samples or a folder of images, got {path}")
    return np.load(path, allow_pickle=False)[:samples]


def _bench(args):
    from rgp_keras.litert import benchmark_tflite, compare_tflite

    for path in args.model:
        if not path.endswith(".tflite"):
            raise InputValueError(f"{path} is not a .tflite file")
    if len(args.model) == 1:
        if args.rounds is not None:
            raise InputValueError("--rounds alternates two or more files: name the files to compare")
        result = benchmark_tflite(args.model[0], threads=args.threads, runs=args.runs)
        if args.json:
            return _print_json(model=args.model[0], **result)
        return print(f"{args.model[0]}: median {result['median_ms']:.3f} ms, min {result['min_ms']:.3f} ms "
                     f"({result['runs']} runs after warm-up, {result['threads']} thread(s), LiteRT + XNNPACK)")
    results = compare_tflite(args.model, threads=args.threads, rounds=9 if args.rounds is None else args.rounds,
                             runs=args.runs)
    if args.json:
        return _print_json(files=results)
    width = max(len(path) for path in args.model)
    print(f"{'file':<{width}}  {'median ms':>9}  ratio to the first (lowest-highest round)")
    for result in results:
        print(f"{result['path']:<{width}}  {result['median_ms']:9.3f}  {result['ratio']:.3f} "
              f"({result['ratio_low']:.3f}-{result['ratio_high']:.3f})")
    print(f"{results[0]['rounds']} alternating rounds of {args.runs} runs per file, medians; {args.threads} thread(s), "
          "LiteRT + XNNPACK")


def _bench_layers(args):
    _on_tensorflow()
    from rgp_keras.export import time_compact_layouts
    from rgp_keras.model_walk import carries_masks
    from rgp_keras.plan.latency import LatencyTable, predict_latency
    from rgp_keras.plan.search import time_plan_segments

    model = _load_keras_model(args.model)
    table = LatencyTable(args.output, args.threads)
    if carries_masks(model):
        # a pruned model: what `rgp export --layout measured --table` reads, not what the planner reads
        layouts = time_compact_layouts(model, table, args.threads)
        if args.json:
            return _print_json(model=args.model, table=args.output, layouts=layouts)
        print("\n".join(f"{name}: {layout}" for name, layout in layouts.items()) or "no layer runs faster compact")
        print(f"{args.output}: the compact layouts of {args.model}'s masked layers timed at {args.threads} "
              f"thread(s) on {table.machine['cpu']}; the layouts above are the fastest (export with `rgp export "
              f"{args.model} --layout measured --table {args.output} --threads {args.threads}`)")
        return None
    time_plan_segments(model, threads=args.threads, table=table, verbose=0 if args.json else 1)
    time_compact_layouts(model, table, args.threads)  # a stripped model's masked layers, if it has any
    prediction = predict_latency(model, threads=args.threads, table=table, verbose=0)
    if args.json:
        return _print_json(model=args.model, table=args.output, total_ms=prediction.total_ms,
                           segments=prediction.segments)
    print(prediction)
    print(f"{args.output}: {len(table.entries)} segment time(s) at {args.threads} thread(s) on {table.machine['cpu']}")


def _plot(args):
    from rgp_keras import plots

    if not args.output.endswith(".png"):
        raise InputValueError(f"-o/--output must end in .png, got {args.output}")
    if args.kind in ("adjacency", "aspl"):
        import numpy as np

        from rgp_keras.graph import RegularGraph
        from rgp_keras.graph._optimize import HISTORY_DTYPE

        if not os.path.isfile(args.source):
            raise FileNotFoundError(f"No such graph file: {args.source}")
        graph = RegularGraph.load(args.source)
        if args.kind == "adjacency":
            plots.plot_adjacency(graph, args.output)
        elif "history" not in graph.metadata:
            raise InputValueError(f"{args.source} has no optimisation history (made by "
                                  f"{graph.metadata.get('method')!r}); "
                             "graphs written by `rgp graph` have one.")
        else:
            history = np.array([tuple(row) for row in graph.metadata["history"]], dtype=HISTORY_DTYPE)
            plots.plot_aspl_history({f"n={graph.nodes}, k={graph.degree}": history}, args.output,
                                    moore_bound=graph.moore_bound)
    else:
        from rgp_keras.masking.summary import pruning_summary

        model = _load_keras_model(args.source)
        plots.plot_layer_sparsity(pruning_summary(model), args.output, title=model.name)
    print(f"-> {args.output}")


def _command(commands, name, help, description, run, model=None, json=None):
    """A subcommand's parser that runs `run(args)`, its example line from `_EXAMPLES` below its options, a
    positional `model` file when `model` says what it is, and a --json flag when `json` says what it prints."""
    command = commands.add_parser(name, help=help, description=description, epilog=_EXAMPLES[name])
    command.set_defaults(run=run)
    if model:
        command.add_argument("model", help=model)
    if json:
        command.add_argument("--json", action="store_true", help=json)
    return command


def _parser():
    parser = argparse.ArgumentParser(
        prog="rgp", description="Regular Graph Pruning for Keras: graphs, pruning, export."
    )
    parser.add_argument("--version", action="version", version=f"rgp_keras {rgp_keras.__version__}")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines (hidden by default)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    graph = _command(
        commands, "graph", "make an ASPL-optimised regular graph and save it",
        "Generate a random connected regular graph and optimise its ASPL by edge swaps.",
        _graph, json="print the result as one JSON object",
    )
    graph.add_argument("--nodes", type=int, default=64, help="nodes n (channel groups; default 64)")
    size = graph.add_mutually_exclusive_group(required=True)
    size.add_argument("--degree", type=int, help="degree k: each layer keeps k/n of its weights")
    size.add_argument("--sparsity", type=float, help="fraction to prune; the nearest valid degree is used (a warning "
                                                     "says when that is over 2 points off)")
    graph.add_argument("--seed", type=int, help="random seed: with --attempts (or the default budget) the same seed "
                       "gives the same graph; a --time-limit run stops after however many attempts this machine "
                       "made in that time, so the same seed is not guaranteed to give the same graph")
    graph.add_argument("--objective", type=_objective, default="min", help="'min' (default), 'max' or a target ASPL")
    budget = graph.add_mutually_exclusive_group()
    budget.add_argument("--attempts", type=int, help="swap attempts (default: scaled to the graph size)")
    budget.add_argument("--time-limit", type=float, help="seconds to optimise")
    graph.add_argument("--jobs", type=int, default=1, help="parallel chains; the best is kept")
    graph.add_argument("--symmetry", type=_auto_or_int, default="auto",
                       help="search graphs unchanged by rotating node labels by n/G (G divides n; 1: no symmetry); "
                            "default auto: the largest G <= min(32, n/8) for degree >= 8, else 1")
    graph.add_argument("--out", required=True, help="graph file to write (.npz)")
    graph.add_argument("--plot", help="also save the ASPL history as a PNG")
    graph.add_argument("--quiet", action="store_true", help="no progress bar")

    prune = _command(
        commands, "prune", "apply RGP masks to a .keras model, or thin its channels, or both",
        "Prune every prunable layer of a Keras 3 model with one regular graph (--sparsity, --degree, --graph), "
        "keep fewer channels (--channels, --channels-macs), or both: channels first. For a latency: `rgp plan`.",
        _prune, model="input .keras model",
    )
    how = prune.add_mutually_exclusive_group()
    how.add_argument("--sparsity", type=float, help="fraction of weights to prune")
    how.add_argument("--degree", type=int, help="graph degree k (keep k/n)")
    how.add_argument("--graph", help="graph file from `rgp graph`")
    width = prune.add_mutually_exclusive_group()
    width.add_argument("--channels", type=float, metavar="KEEP",
                       help="keep this fraction of each hidden channel space: a thinner model of ordinary layers")
    width.add_argument("--channels-macs", type=float, metavar="FRACTION",
                       help="keep as many channels as leave this fraction of the model's MACs")
    prune.add_argument("--nodes", type=_auto_or_int, help="graph nodes n with --sparsity/--degree, or 'auto' (default: "
                       "the largest n giving the sparsity exactly with groups as wide as the layers allow; "
                       "64 with --degree)")
    prune.add_argument("--seed", type=int, help="random seed of the graph")
    prune.add_argument("-o", "--output", required=True, help="pruned .keras model to write")
    prune.add_argument("--calibration", help="unlabelled inputs for data-aware pruning (reconstruction): a .npy "
                       "array (N, *input) or a folder of images")
    prune.add_argument("--calibration-samples", type=int, help="use at most N calibration samples (default: all)")
    prune.add_argument("--calibration-mixes", type=_auto_or_int, default="auto",
                       help="reconstruction also fits on N mixes of pairs of samples, or 'auto' (default: up to 8x "
                       "the samples when a masked layer is short of rows and the inputs are small); 0: none")
    prune.add_argument("--calibration-batch-size", type=int,
                       help="calibration samples run together (default: as many as keep the largest activation of a "
                       "batch within 128 MB); memory is bounded by a batch")
    prune.add_argument("--graph-candidates", type=int, default=1,
                       help="with --calibration: prune with N minimum-ASPL graphs and keep the one whose outputs "
                       "on the calibration samples are closest to the dense model's (default: 1)")
    prune.add_argument("--keep-channel-order", action="store_true",
                       help="no channel assignment: the mask keeps the channels' own order (the paper's flow)")
    prune.add_argument("--quiet", action="store_true", help="do not print the summary table")

    plan = _command(
        commands, "plan", "prune a .keras model to a LiteRT latency: widths and RGP per layer",
        "Plan each layer's width and RGP graph so that the model's float LiteRT file runs in TARGET x the dense "
        "file's time, from layer latencies measured on this machine (cached) or on the target (--table); print the "
        "plan and, with -o, write the pruned model (thinned, masked where planned, refit on the calibration samples).",
        _plan, model="input .keras model", json="print the plan as one JSON object",
    )
    plan.add_argument("--latency", type=float, required=True, metavar="TARGET",
                      help="the pruned file's latency as a fraction of the dense file's, in (0, 1)")
    plan.add_argument("--calibration", required=True, help="unlabelled inputs the accuracy costs are measured on: a "
                      ".npy array (N, *input) or a folder of images")
    plan.add_argument("-o", "--output", help="pruned .keras model to write (default: print the plan only)")
    plan.add_argument("--threads", type=int, default=1, help="LiteRT threads the file will run with (default 1)")
    plan.add_argument("--table", help="a latency table measured on the target device (`rgp bench-layers`)")
    plan.add_argument("--calibration-samples", type=int, help="use at most N calibration samples (default: all)")
    plan.add_argument("--calibration-batch-size", type=int, help="calibration samples run together (default: as "
                      "many as keep the largest activation of a batch within 128 MB)")

    _command(
        commands, "summary", "per-layer params and MACs of a (pruned) .keras model",
        "Print parameters and MACs, dense -> kept, per layer.",
        _summary, model=".keras model", json="print rows and totals as one JSON object",
    )

    export = _command(
        commands, "export", "write a .tflite file with compact (or sparse) kernels",
        "Export a pruned or stripped .keras model to LiteRT; prints sizes, params and MACs.",
        _export, model="pruned or stripped .keras model", json="print the report as one JSON object",
    )
    export.add_argument("-o", "--output", required=True, help=".tflite file to write")
    export.add_argument("--sparse", action="store_true", help="keep dense-shaped kernels with zeros (no compact "
                                                              "rewrite)")
    export.add_argument("--layout", choices=["auto", "measured", "gather", "slices", "scatter"], default="auto",
                        help="compact layout: auto (estimated fastest per layer, default), measured (timed on this "
                             "machine's LiteRT per layer, kept in the user's cache) or forced where it applies")
    export.add_argument("--threads", type=int, default=1,
                        help="CPU threads the file will run with; auto keeps more layers dense for more (default 1)")
    export.add_argument("--table", help="with --layout measured: layer times measured on the target device "
                                         "(`rgp bench-layers pruned.keras -o table.json` there)")
    export.add_argument("--quantize", choices=["dynamic", "float16", "int8"], help="post-training quantization")
    export.add_argument("--calibration", help="int8 calibration inputs: a .npy array (N, *input) or a folder of images")

    bench = _command(
        commands, "bench", "LiteRT latency of a .tflite file, or several side by side",
        "Median single-sample latency with the LiteRT interpreter (XNNPACK) after warm-up; with several files, "
        "each timed in turn in alternating rounds and its median ratio to the first file's time.",
        _bench, json="print the timings as one JSON object",
    )
    bench.add_argument("model", nargs="+", help=".tflite file(s); the first is the baseline of the ratios")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    bench.add_argument("--runs", type=int, default=30, help="timed invocations (per file and round; default 30)")
    bench.add_argument("--rounds", type=int, help="with several files: alternating rounds (default 9)")

    bench_layers = _command(
        commands, "bench-layers", "time a .keras model's layers on this machine's LiteRT into a latency table",
        "Time each layer segment of a model (once; dense, at the widths and as the RGP kernels prune_for_latency "
        "plans with) and add the times to a JSON table that predict_latency and prune_for_latency read; of a "
        "pruned model, time its masked layers' compact layouts instead (what `rgp export --layout measured "
        "--table` reads). Run it on the target device (any machine with Python, TensorFlow and ai-edge-litert).",
        _bench_layers, model=".keras model", json="print the prediction as one JSON object",
    )
    bench_layers.add_argument("-o", "--output", required=True, help="latency table (.json) to write or extend")
    bench_layers.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")

    plot = _command(
        commands, "plot", "PNG figures: ASPL history, graph adjacency, per-layer kept weights",
        "Save a figure as PNG.",
        _plot,
    )
    plot.add_argument("kind", choices=["aspl", "adjacency", "layers"],
                      help="aspl (ASPL history of a graph file), adjacency (its heatmap) or layers (of a .keras model)")
    plot.add_argument("source", help="graph .npz file (aspl, adjacency) or .keras model (layers)")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")
    return parser


@contextlib.contextmanager
def _native_logs_hidden():
    """Send what TensorFlow / LiteRT's C++ code writes to stderr (CUDA probing, oneDNN and XNNPACK notes) to
    /dev/null, while Python's own messages (warnings, errors) still reach the terminal.

    TensorFlow writes most of these before it reads TF_CPP_MIN_LOG_LEVEL, so
    the file descriptor itself is redirected.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    terminal, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    python_stderr = sys.stderr
    sys.stderr = open(terminal, "w", closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)


# Python argument names in library messages -> the options that set them
_OPTIONS = {"representative_data": "--calibration", "calibration_data": "--calibration",
            "calibration_samples": "--calibration-samples",
            "calibration_mixes": "--calibration-mixes", "calibration_batch_size": "--calibration-batch-size",
            "graph_candidates": "--graph-candidates", "keep": "--channels", "macs": "--channels-macs",
            "target": "--latency", "latency_table": "--table", "table": "--table",
            "time_limit": "--time-limit", **{name: f"--{name}" for name in (
                "nodes", "degree", "sparsity", "seed", "symmetry", "attempts", "jobs", "threads", "layout",
                "quantize", "objective", "runs", "rounds")}}


def _in_cli_words(message):
    """A library error message with `argument` names replaced by the command-line options that set them."""
    return re.sub(r"`(\w+)`", lambda match: _OPTIONS.get(match.group(1), match.group(0)), message)


def main(argv=None):
    """Run the `rgp` tool; input errors print one line and exit with status 2, bugs their traceback."""
    args = _parser().parse_args(argv)
    try:
        with contextlib.nullcontext() if args.verbose else _native_logs_hidden():
            args.run(args)
    except (InputError, OSError) as error:
        print(f"rgp {args.command}: error: {_in_cli_words(str(error))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
