"""ASPL optimisation of a regular graph by degree-preserving double-edge swaps."""

import concurrent.futures
import dataclasses
import math
import multiprocessing
import numbers
import sys
import time

import numpy as np

from rgp_keras._checks import check_int, check_positive
from rgp_keras.errors import InputTypeError, InputValueError
from rgp_keras.graph._regular import RegularGraph, check_symmetry, moore_total

START_TEMPERATURE = 0.3
COOLING = 0.002  # the temperature falls geometrically to this share of the start, then to 0 for the last 3 %
BLOCK = 4096  # attempts per kernel call when the budget is in attempts
HISTORY_DTYPE = np.dtype([("attempt", np.int64), ("aspl", np.float64), ("diameter", np.int64)])


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    """What `optimize` found.

    Attributes:
        graph: the best graph found.
        history: structured array with fields `attempt`, `aspl`, `diameter`:
            the start, every improvement of the best graph, and the last attempt.
        elapsed: wall time in seconds.
        attempts: swap attempts made (in the best chain when `jobs > 1`).
        symmetry: the rotational symmetry g searched (1: none).
    """

    graph: RegularGraph
    history: np.ndarray
    elapsed: float
    attempts: int
    symmetry: int = 1


def auto_symmetry(nodes, degree, objective="min"):
    """The symmetry `optimize` uses by default: the largest g dividing n with g <= min(32, n / 8) for
    minimising degree >= 8 graphs (where benchmarks/graph_bench.py measured it to help; docs/graphs.md), else 1."""
    if objective != "min" or degree < 8:
        return 1
    for symmetry in range(min(32, nodes // 8), 1, -1):
        if nodes % symmetry == 0 and (degree % 2 == 0 or (nodes // symmetry) % 2 == 0):
            return symmetry
    return 1


def default_attempts(nodes, degree):
    """The swap budget used when neither `attempts` nor `time_limit` is given.

    2,000 n k attempts (1,024,000 at n = 64, k = 8), capped so
    that large graphs, whose ASPL evaluation costs about n^2 k / 64, also
    finish in seconds; never fewer than 1,000.
    """
    return max(1000, min(2000 * nodes * degree, 2 * 10**11 // (nodes * nodes * degree)))


def optimize(
    graph,
    objective="min",
    *,
    attempts=None,
    time_limit=None,
    patience=None,
    seed=None,
    jobs=1,
    symmetry="auto",
    progress=False,
    callback=None,
):
    """Rewire `graph` by double-edge swaps towards the ASPL asked for.

    A swap replaces edges (a, b), (c, d) by (a, d), (c, b) when all four ends
    differ and neither new edge exists; it keeps every degree, and a swap that
    disconnects the graph is rejected. The second edge is drawn uniformly or,
    as long as that gains more, as the best of several draws for a local
    rewiring or a long shortcut (adaptive pursuit between the three).
    Acceptance is simulated annealing on the distance sum, cooled to zero over
    the budget; the best graph seen is returned. Each attempt is scored by a
    compiled bit-parallel BFS that stops as soon as the swap is surely
    rejected (docs/graphs.md has its speed).

    Args:
        graph: the starting `RegularGraph` (left unchanged: graphs are immutable).
        objective: `"min"` minimises (diameter, ASPL) lexicographically, `"max"`
            maximises the ASPL, a float targets that ASPL (the paper's sweeps
            over the ASPL range) and stops once reached.
        attempts: swap attempts to make. Default: `default_attempts(n, k)`
            unless `time_limit` is given.
        time_limit: stop after this many seconds.
        patience: stop after this many attempts without a better graph.
        seed: seed for reproducible runs (same seed, same result when the run
            is bounded by `attempts` rather than time).
        jobs: independent chains run in parallel processes; the best is kept.
        symmetry: search only graphs unchanged by the rotation v -> v + n / g
            of the node labels, for `symmetry` = g > 1 (Graph Golf's
            rotationally symmetric graphs): every swap is applied to all g
            rotations of its edges and the ASPL needs BFS from n / g nodes
            only. A smaller space that anneals further in the same time for
            larger degrees. `graph` must already be such a graph, e.g.
            `RegularGraph.random(n, k, symmetry=g)`; one attempt is one orbit
            of g swaps. "auto" (default): `auto_symmetry(n, k, objective)`;
            if `graph` is not symmetric under it, the search starts from a
            random graph of the same size that is (drawn with `seed`; pass
            symmetry=1 to anneal `graph` itself). `result.symmetry` says
            which g was used.
        progress: print a progress bar to stderr.
        callback: `callback(attempt, aspl, diameter)`, called on each new best
            graph (only with `jobs=1`); returning `True` stops the run.

    Returns:
        An `OptimizeResult`.

    Example:
    >>> start = RegularGraph.random(64, 4, seed=0)
    >>> result = optimize(start, attempts=4032, seed=0)
    >>> result.graph.aspl < start.aspl
    True
    """
    if not isinstance(graph, RegularGraph):
        raise InputTypeError(f"`graph` must be a RegularGraph, got {type(graph).__name__}.")
    target = _check_objective(objective, graph)
    if attempts is not None:
        attempts = check_int("attempts", attempts, minimum=1)
    if time_limit is not None:
        time_limit = check_positive("time_limit", time_limit)
    if attempts is None and time_limit is None:
        attempts = default_attempts(graph.nodes, graph.degree)
    if patience is not None:
        patience = check_int("patience", patience, minimum=1)
    jobs = check_int("jobs", jobs, minimum=1)
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    if symmetry == "auto":
        symmetry = auto_symmetry(graph.nodes, graph.degree, objective)
        if not graph.is_symmetric(symmetry):
            if graph.gap > 0:
                graph = RegularGraph.random(graph.nodes, graph.degree, seed=seed, symmetry=symmetry)
            else:  # already at the Moore bound: nothing to search
                symmetry = 1
    symmetry = check_symmetry(graph.nodes, symmetry)
    if not graph.is_symmetric(symmetry):
        raise InputValueError(
            f"`symmetry`={symmetry} needs a start graph unchanged by the rotation v -> v + "
            f"{graph.nodes // symmetry} (mod {graph.nodes}); this one is not. Start from "
            f"RegularGraph.random({graph.nodes}, {graph.degree}, symmetry={symmetry})."
        )
    if callback is not None and jobs > 1:
        raise InputValueError("`callback` is only supported with jobs=1 (chains run in other processes).")
    seeds = np.random.SeedSequence(seed).spawn(jobs)
    period = graph.nodes // symmetry
    budget = (attempts, time_limit, patience)
    started = time.perf_counter()
    if jobs == 1:
        chains = [_Chain(graph, target, seeds[0], period).run(*budget, progress, callback)]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_run_chain, graph.adjacency, target, chain_seed, period, budget, progress and i == 0)
                for i, chain_seed in enumerate(seeds)
            ]
            chains = [future.result() for future in futures]
    elapsed = time.perf_counter() - started
    neighbors, _, _, history, made = min(chains, key=lambda chain: _chain_energy(target, chain[1], chain[2]))
    adjacency = np.zeros((graph.nodes, graph.nodes), dtype=bool)
    np.put_along_axis(adjacency, neighbors, True, axis=1)
    metadata = {
        "method": "optimize",
        "objective": objective if isinstance(objective, str) else float(objective),
        "seed": seed,
        "symmetry": symmetry,
        "attempts": made,
        "start_aspl": graph.aspl,
        "start": graph.metadata,
        # best (attempt, ASPL, diameter) at each improvement: `rgp plot aspl` draws it from the file
        "history": [[int(a), float(b), int(d)] for a, b, d in history.tolist()],
    }
    return OptimizeResult(RegularGraph(adjacency, metadata), history, elapsed, made, symmetry)


def warm_up():
    """Compile the optimiser's kernel now, or load it from numba's disk cache, for every path `optimize` takes.

    A graph already at the Moore bound is returned without annealing, so the
    starts here are not: one without symmetry (degree < 8) and one searched
    under rotational symmetry (degree >= 8, the default of `prune_regular_graph`
    and `rgp graph` at 87.5 % on 64 nodes), each for every objective. `make`
    calls it once, so that no later process stalls ~10 s compiling.

    Example:
    >>> warm_up()
    """
    for nodes, degree in ((32, 4), (64, 8)):
        for objective in ("min", "max", 3.0):
            optimize(RegularGraph.random(nodes, degree, seed=0), objective, attempts=256, seed=0)
            optimize(RegularGraph.random(nodes, degree, seed=0), objective, time_limit=0.01, seed=0)


def _check_objective(objective, graph):
    """Return "min", "max" or the target distance sum for a float objective."""
    if objective in ("min", "max"):
        return objective
    if isinstance(objective, bool) or not isinstance(objective, numbers.Real) or not math.isfinite(objective):
        raise InputValueError(f"`objective` must be 'min', 'max' or a target ASPL (a number), got {objective!r}.")
    if objective < graph.moore_bound:
        raise InputValueError(
            f"Target ASPL {objective} is below the Moore bound {graph.moore_bound:.4f} of "
            f"{graph.degree}-regular graphs on {graph.nodes} nodes: no such graph exists."
        )
    return round(objective * graph.nodes * (graph.nodes - 1) / 2)


def _chain_energy(target, total, diameter):
    """The quantity a chain minimises, as a sortable tuple."""
    if target == "min":
        return (diameter, total)
    if target == "max":
        return (0, -total)
    return (0, abs(total - target))


def _run_chain(adjacency, target, seed, period, budget, progress):
    return _Chain(RegularGraph(adjacency), target, seed, period).run(*budget, progress, None)


class _Chain:
    """One annealing chain; the attempts themselves run in the compiled `kernel.anneal`.

    The driver hands the kernel blocks of attempts with their temperatures:
    fixed-size blocks when the budget is in attempts (so a seed gives the same
    result however fast the machine), blocks of about 50 ms under a time limit.
    """

    def __init__(self, graph, target, seed, period):
        # numba is imported on the first optimisation, not with the package.
        import rgp_keras.graph._anneal as kernel

        kernel.announce_compilation()
        self.kernel = kernel
        self.nodes, self.degree, self.period = graph.nodes, graph.degree, period
        self.neighbors = graph.neighbors.astype(np.int64)
        self.adjacency = graph.adjacency.copy()
        total, diameter = graph._stats
        # The kernel works on ordered-pair sums: twice the unordered ones.
        self.state = np.array([2 * total, diameter, 2 * total, diameter, 0, 0, 0], dtype=np.int64)
        self.best = self.neighbors.copy()
        # Row 0: each proposal operator's probability (uniform at first), row 1: its recent gain.
        self.operators = np.array([[1 / kernel.OPERATORS] * kernel.OPERATORS, [0.0] * kernel.OPERATORS])
        self.pairs = self.nodes * (self.nodes - 1)
        if target == "min":
            self.mode, self.goal = kernel.MIN, 0
            self.stop = moore_total(self.nodes, self.degree) * self.nodes
        elif target == "max":
            self.mode, self.goal, self.stop = kernel.MAX, 0, -(1 << 62)
        else:
            self.mode, self.goal, self.stop = kernel.TARGET, 2 * target, 0
        kernel.seed(int(seed.generate_state(1)[0] >> 1))
        # Start temperature: START_TEMPERATURE x the median change of the distance
        # sum by one random swap on the start graph (0, 0.03, 0.1, 0.3 and 1 x
        # measured at n = 64, k = 4 and 8, 4k to 10M attempts: 0.3 is best from
        # 100k attempts on, and within noise of greedy below).
        change = kernel.typical_change(self.neighbors, self.adjacency, period, 64)
        self.start_temperature = START_TEMPERATURE * max(2.0, change)

    def run(self, attempts, time_limit, patience, progress, callback):
        kernel = self.kernel
        started = time.perf_counter()
        history = [(0, self.state[kernel.TOTAL] / self.pairs, self.state[kernel.DIAMETER])]
        bar = _Progress(attempts, time_limit) if progress else None
        block = 64 if time_limit else BLOCK  # under a time limit, grown to ~50 ms per call
        # A start already at the goal (e.g. every 62-regular graph on 64 nodes meets the bound) is kept.
        start_total = int(self.state[kernel.TOTAL])
        done = (self.mode == kernel.MIN and start_total <= self.stop) or (
            self.mode == kernel.TARGET and start_total == self.goal
        )
        while not done:
            made = int(self.state[kernel.ATTEMPTS])
            elapsed = time.perf_counter() - started
            fraction = max(made / attempts if attempts else 0.0, elapsed / time_limit if time_limit else 0.0)
            if fraction >= 1:
                break
            size = min(block, attempts - made) if attempts else block
            if attempts:
                fractions = (made + np.arange(size)) / attempts
            else:
                fractions = np.full(size, fraction)
            temperatures = np.where(fractions < 0.97, self.start_temperature * COOLING**fractions, 0.0)
            records = np.zeros((size, 3), dtype=np.int64)
            self.state[kernel.RECORDS] = 0
            block_started = time.perf_counter()
            done = kernel.anneal(
                self.neighbors, self.adjacency, self.best, self.state, records, self.operators,
                self.mode, self.goal, temperatures, patience or 0, self.stop, self.period,
            )
            if time_limit:
                took = time.perf_counter() - block_started
                block = int(np.clip(size * 0.05 / max(took, 1e-6), 64, 1 << 20))
            stopped = False
            for attempt, total, diameter in records[: self.state[kernel.RECORDS]].tolist():
                history.append((attempt, total / self.pairs, diameter))
                if callback is not None and callback(attempt, total / self.pairs, diameter):
                    stopped = True
                    break
            if bar is not None:
                bar.update(int(self.state[kernel.ATTEMPTS]), time.perf_counter() - started, self.best_aspl)
            if done or stopped:
                break
        made = int(self.state[kernel.ATTEMPTS])
        if bar is not None:
            bar.close(made, time.perf_counter() - started, self.best_aspl)
        if history[-1][0] != made:
            history.append((made, self.best_aspl, int(self.state[kernel.BEST_DIAMETER])))
        best_total = int(self.state[kernel.BEST_TOTAL]) // 2
        history = np.array(history, dtype=HISTORY_DTYPE)
        return self.best, best_total, int(self.state[kernel.BEST_DIAMETER]), history, made

    @property
    def best_aspl(self):
        kernel = self.kernel
        return self.state[kernel.BEST_TOTAL] / self.pairs


class _Progress:
    """A one-line progress bar on stderr (the graph engine does not import Keras)."""

    def __init__(self, attempts, time_limit, width=30):
        self.attempts, self.time_limit, self.width = attempts, time_limit, width
        self.shown = -1.0

    def update(self, attempt, elapsed, aspl, final=False):
        fraction = max(
            attempt / self.attempts if self.attempts else 0.0,
            elapsed / self.time_limit if self.time_limit else 0.0,
        )
        if not final and elapsed - self.shown < 0.2:
            return
        self.shown = elapsed
        filled = int(self.width * min(fraction, 1.0))
        sys.stderr.write(
            f"\r[{'=' * filled}{'.' * (self.width - filled)}] {attempt} attempts {elapsed:.1f}s best ASPL {aspl:.4f}"
        )
        sys.stderr.flush()

    def close(self, attempt, elapsed, aspl):
        self.update(attempt, elapsed, aspl, final=True)
        sys.stderr.write("\n")
