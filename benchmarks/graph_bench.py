"""Graph-engine benchmark: speed against the authors' networkx loop, quality against the
Moore bound and the Graph Golf records, and scaling of one ASPL evaluation.

Writes benchmarks/results/graph.md and benchmarks/results/graph_aspl.png.

    python benchmarks/graph_bench.py            # about 20 minutes on 2 cores
    python benchmarks/graph_bench.py --quick    # shorter budgets, for a smoke run
"""

import argparse
import pathlib
import platform
import statistics
import time

import igraph
import networkx as nx
import numpy as np

import rgp_keras.graph._anneal as kernel
from rgp_keras.graph import RegularGraph, moore_bound, optimize
from rgp_keras.plots import plot_aspl_history

RESULTS = pathlib.Path(__file__).parent / "results"
# Graph Golf best-known ASPLs (order/degree problem), as quoted in METHOD.md.
RECORDS = {(64, 8): 1.927, (256, 8): 2.736, (512, 8): 3.111, (1024, 32): 1.998}
REQUIRED = {(64, 4): 2.886, (64, 8): 1.96, (64, 16): 1.7460, (256, 8): 2.80}
# Rotational symmetry per quality row: the best of 1, 4, 8, 16, 32 (64) in one 60 s run each,
# measured with this script's settings (k = 4 gains nothing from it; k >= 8 does).
SYMMETRY = {(64, 4): 1, (64, 8): 8, (64, 16): 1, (256, 8): 32}
SYMMETRY_1024 = 32


def authors_loop(graph, attempts, seed):
    """The authors' greedy loop in networkx: one random double-edge swap on a copy,
    a connectivity check, a full ASPL recompute; kept when the ASPL is not worse.
    (Their code compares with the starting ASPL; we compare with the current one,
    which only helps them.)"""
    rng = np.random.default_rng(seed)
    current = nx.Graph(graph.edges.tolist())
    best = nx.average_shortest_path_length(current)
    for _ in range(attempts):
        candidate = current.copy()
        nx.double_edge_swap(candidate, nswap=1, max_tries=1000, seed=int(rng.integers(2**31)))
        if not nx.is_connected(candidate):
            continue
        aspl = nx.average_shortest_path_length(candidate)
        if aspl <= best:
            current, best = candidate, aspl
    return best


def speed_section(their_repeats, repeats):
    rows = [f"| n | k | attempts | networkx loop: s, final ASPL (medians of {their_repeats} seeds) | rgp_keras: s, "
            f"final ASPL (medians of {repeats} seeds) | speed-up | goal >= 50x, ASPL <= networkx |",
            "|---|---|---|---|---|---|---|"]
    optimize(RegularGraph.random(16, 4, seed=0), attempts=10, seed=0)  # load the compiled kernel once
    for degree in (4, 8, 16):
        nodes = 64
        attempts = nodes * (nodes - 1)
        start = RegularGraph.random(nodes, degree, seed=0)
        their_times, their_finals = [], []
        for repeat in range(their_repeats):
            began = time.perf_counter()
            their_finals.append(authors_loop(start, attempts, seed=repeat))
            their_times.append(time.perf_counter() - began)
        their_time, theirs = statistics.median(their_times), statistics.median(their_finals)
        times, finals, used = [], [], []
        for repeat in range(repeats):
            result = optimize(start, attempts=attempts, seed=repeat)
            times.append(result.elapsed)
            finals.append(result.graph.aspl)
            used.append(result.attempts)
        ours = statistics.median(times)
        note = "" if max(used) == attempts else f" (reached the Moore bound after {max(used)} attempts)"
        mine = statistics.median(finals)
        met = their_time / ours >= 50 and mine <= theirs + 1e-12
        rows.append(
            f"| {nodes} | {degree} | {attempts} | {their_time:.2f}, {theirs:.4f} | {ours:.3f}, "
            f"{mine:.4f}{note} | {their_time / ours:.0f}x | {'met' if met else 'not met'} |"
        )
        print(rows[-1], flush=True)
    return rows


def quality_section(seconds):
    rows = [f"| n | k | symmetry | ASPL after {seconds:.0f} s | diameter | Moore bound L | gap to L | Graph Golf "
            f"record | gap to record | required | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    histories = {}
    for (nodes, degree), symmetry in SYMMETRY.items():
        start = RegularGraph.random(nodes, degree, seed=0, symmetry=symmetry)
        result = optimize(start, time_limit=seconds, seed=0, symmetry=symmetry)
        graph = result.graph
        record = RECORDS.get((nodes, degree))
        required = REQUIRED[(nodes, degree)]
        record_text = f"{record:.3f} | {100 * (graph.aspl / record - 1):+.2f}%" if record else "– | –"
        rows.append(
            f"| {nodes} | {degree} | {symmetry} | {graph.aspl:.4f} | {graph.diameter} | {graph.moore_bound:.4f} | "
            f"{100 * graph.gap:.2f}% | {record_text} | <= {required} | "
            f"{'met' if graph.aspl <= required + 5e-5 else 'not met'} |"
        )
        histories[f"n={nodes}, k={degree}"] = result.history
        print(rows[-1], flush=True)
    return rows, histories


def median_seconds(function, repeats):
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def scale_section(long_seconds):
    """One full ASPL evaluation (no early stop) by the optimiser's compiled BFS, from all n
    sources and from the n/16 a 16-fold symmetric graph needs, against igraph."""
    rows = ["| n | k | rgp_keras, n sources (ms) | rgp_keras, n/16 sources: symmetry 16 (ms) | igraph "
            "average_path_length (ms) | igraph / rgp_keras (n sources) |",
            "|---|---|---|---|---|---|"]
    for nodes in (64, 256, 512, 1024):
        for degree in (8, 32):
            graph = RegularGraph.random(nodes, degree, seed=0)
            neighbors = graph.neighbors.astype(np.int64)
            ours = {}
            for sources in (nodes, nodes // 16):
                scratch = kernel.scratch(nodes, sources)
                kernel.distance_sum(neighbors, sources, kernel.NEVER, *scratch)  # compile / load
                ours[sources] = median_seconds(
                    lambda: kernel.distance_sum(neighbors, sources, kernel.NEVER, *scratch), 20
                )
            reference = graph.to_igraph()
            theirs = median_seconds(reference.average_path_length, 3)
            rows.append(
                f"| {nodes} | {degree} | {1e3 * ours[nodes]:.3f} | {1e3 * ours[nodes // 16]:.3f} | "
                f"{1e3 * theirs:.3f} | {theirs / ours[nodes]:.1f}x |"
            )
            print(rows[-1], flush=True)
    symmetry = SYMMETRY_1024
    start = RegularGraph.random(1024, 32, seed=0, symmetry=symmetry)
    long_rows = ["| n | k | symmetry | budget | ASPL | diameter | Moore bound | record |",
                 "|---|---|---|---|---|---|---|---|"]
    for seconds in (60, long_seconds):
        graph = optimize(start, time_limit=seconds, seed=0, symmetry=symmetry).graph
        long_rows.append(
            f"| 1024 | 32 | {symmetry} | {seconds:.0f} s | {graph.aspl:.4f} | {graph.diameter} | "
            f"{moore_bound(1024, 32):.4f} | {RECORDS[(1024, 32)]} |"
        )
        print(long_rows[-1], flush=True)
    return rows, long_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budgets (smoke run)")
    args = parser.parse_args()
    seconds = 5 if args.quick else 60
    long_seconds = 10 if args.quick else 600
    RESULTS.mkdir(parents=True, exist_ok=True)
    speed = speed_section(their_repeats=3 if args.quick else 5, repeats=20)
    quality, histories = quality_section(seconds)
    scale, long_rows = scale_section(long_seconds)
    plot_aspl_history(histories, RESULTS / "graph_aspl.png", title=f"ASPL against swap attempts ({seconds:.0f} s each)")
    text = "\n".join(
        [
            "# Graph engine benchmark",
            "",
            f"`python benchmarks/graph_bench.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
            f"{platform.python_version()}, igraph {igraph.__version__}, networkx {nx.__version__}, one core per run.",
            "",
            "## 1. Speed against the authors' loop (same attempt budget n(n-1), same start graph)",
            "",
            *speed,
            "",
            "## 2. Quality: one chain, time-limited (symmetry g: graphs unchanged by rotating the node labels by n/g)",
            "",
            *quality,
            "",
            "![ASPL against attempts](graph_aspl.png)",
            "",
            "## 3. Scale: one ASPL evaluation (median of repeats)",
            "",
            *scale,
            "",
            *long_rows,
            "",
        ]
    )
    (RESULTS / "graph.md").write_text(text)
    print(f"wrote {RESULTS / 'graph.md'}")


if __name__ == "__main__":
    main()
