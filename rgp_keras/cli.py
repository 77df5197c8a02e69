"""The `rgp` command line tool."""

import argparse
import sys

import rgp_keras

_EXAMPLES = {
    "graph": "example: rgp graph --nodes 64 --sparsity 0.875 --seed 0 --time-limit 10 --out graph.npz",
    "prune": "example: rgp prune model.keras --sparsity 0.875 --nodes 64 -o pruned.keras",
    "summary": "example: rgp summary pruned.keras",
}


def _objective(text):
    if text in ("min", "max"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'min', 'max' or a target ASPL, got {text!r}") from None


def _graph(args):
    from rgp_keras.graph import RegularGraph, degree_for_sparsity, optimize

    degree = args.degree if args.degree is not None else degree_for_sparsity(args.nodes, args.sparsity)
    start = RegularGraph.random(args.nodes, degree, seed=args.seed)
    result = optimize(
        start,
        args.objective,
        attempts=args.attempts,
        time_limit=args.time_limit,
        seed=args.seed,
        jobs=args.jobs,
        progress=not args.quiet,
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
    print(
        f"nodes {graph.nodes}  degree {graph.degree}  sparsity {graph.sparsity:.4f}\n"
        f"ASPL {start.aspl:.4f} -> {graph.aspl:.4f}  diameter {start.diameter} -> {graph.diameter}\n"
        f"Moore bound {graph.moore_bound:.4f}  gap {100 * graph.gap:.2f}%\n"
        f"{result.attempts} attempts in {result.elapsed:.2f}s -> {args.out}"
    )


def _load_keras_model(path):
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file: {path}")
    if not str(path).endswith(".keras"):
        raise ValueError(f"{path} is not a .keras file; save the model with model.save('model.keras').")
    import keras

    import rgp_keras.wrapper  # noqa: F401  (registers RegularGraphPruning for loading)

    return keras.saving.load_model(path)


def _prune(args):
    from rgp_keras.prune import prune_regular_graph
    from rgp_keras.summary import pruning_summary

    if not args.output.endswith(".keras"):
        raise ValueError(f"-o/--output must end in .keras, got {args.output}")
    model = _load_keras_model(args.model)
    pruned = prune_regular_graph(
        model, sparsity=args.sparsity, degree=args.degree, graph=args.graph, nodes=args.nodes, seed=args.seed
    )
    pruned.save(args.output)
    if not args.quiet:
        print(pruning_summary(pruned))
    print(f"-> {args.output}")


def _summary(args):
    from rgp_keras.summary import pruning_summary

    print(pruning_summary(_load_keras_model(args.model)))


def _parser():
    parser = argparse.ArgumentParser(
        prog="rgp", description="Regular Graph Pruning for Keras: graphs, pruning, export."
    )
    parser.add_argument("--version", action="version", version=f"rgp_keras {rgp_keras.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    graph = commands.add_parser(
        "graph",
        help="make an ASPL-optimised regular graph and save it",
        description="Generate a random connected regular graph and optimise its ASPL by edge swaps.",
        epilog=_EXAMPLES["graph"],
    )
    graph.add_argument("--nodes", type=int, default=64, help="nodes n (channel groups; default 64)")
    size = graph.add_mutually_exclusive_group(required=True)
    size.add_argument("--degree", type=int, help="degree k: each layer keeps k/n of its weights")
    size.add_argument("--sparsity", type=float, help="fraction to prune; the nearest valid degree is used")
    graph.add_argument("--seed", type=int, help="random seed (reproducible graphs)")
    graph.add_argument("--objective", type=_objective, default="min", help="'min' (default), 'max' or a target ASPL")
    budget = graph.add_mutually_exclusive_group()
    budget.add_argument("--attempts", type=int, help="swap attempts (default: scaled to the graph size)")
    budget.add_argument("--time-limit", type=float, help="seconds to optimise")
    graph.add_argument("--jobs", type=int, default=1, help="parallel chains; the best is kept")
    graph.add_argument("--out", required=True, help="graph file to write (.npz)")
    graph.add_argument("--plot", help="also save the ASPL history as a PNG")
    graph.add_argument("--quiet", action="store_true", help="no progress bar")
    graph.set_defaults(run=_graph)

    prune = commands.add_parser(
        "prune",
        help="apply RGP masks to a .keras model",
        description="Prune every prunable layer of a Keras 3 model with one regular graph.",
        epilog=_EXAMPLES["prune"],
    )
    prune.add_argument("model", help="input .keras model")
    how = prune.add_mutually_exclusive_group(required=True)
    how.add_argument("--sparsity", type=float, help="fraction of weights to prune")
    how.add_argument("--degree", type=int, help="graph degree k (keep k/n)")
    how.add_argument("--graph", help="graph file from `rgp graph`")
    prune.add_argument("--nodes", type=int, default=64, help="graph nodes n with --sparsity/--degree (default 64)")
    prune.add_argument("--seed", type=int, help="random seed of the graph")
    prune.add_argument("-o", "--output", required=True, help="pruned .keras model to write")
    prune.add_argument("--quiet", action="store_true", help="do not print the summary table")
    prune.set_defaults(run=_prune)

    summary = commands.add_parser(
        "summary",
        help="per-layer params and MACs of a (pruned) .keras model",
        description="Print parameters and MACs, dense -> kept, per layer.",
        epilog=_EXAMPLES["summary"],
    )
    summary.add_argument("model", help=".keras model")
    summary.set_defaults(run=_summary)
    return parser


def main(argv=None):
    """Run the `rgp` tool; user errors print one line and exit with status 2."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"rgp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
