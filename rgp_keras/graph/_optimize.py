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
from rgp_keras.graph._bfs import distance_stats
from rgp_keras.graph._regular import RegularGraph, _moore_total

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
    """

    graph: RegularGraph
    history: np.ndarray
    elapsed: float
    attempts: int


def default_attempts(nodes, degree):
    """The swap budget used when neither `attempts` nor `time_limit` is given.

    500 n k attempts (256,000 at n = 64, k = 8: about 3 s), capped so that
    large graphs, whose ASPL evaluation costs about n^2 k, also finish in
    seconds; never fewer than 1,000.
    """
    return max(1000, min(500 * nodes * degree, 2 * 10**10 // (nodes * nodes * degree)))


def optimize(
    graph,
    objective="min",
    *,
    attempts=None,
    time_limit=None,
    patience=None,
    seed=None,
    jobs=1,
    progress=False,
    callback=None,
):
    """Rewire `graph` by double-edge swaps towards the ASPL asked for.

    A swap replaces edges (a, b), (c, d) by (a, d), (c, b) when all four ends
    differ and neither new edge exists; it keeps every degree, and a swap that
    disconnects the graph is rejected. Acceptance is simulated annealing on
    the distance sum, cooled to zero over the budget; the best graph seen is
    returned.

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
        raise TypeError(f"`graph` must be a RegularGraph, got {type(graph).__name__}.")
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
    if callback is not None and jobs > 1:
        raise ValueError("`callback` is only supported with jobs=1 (chains run in other processes).")
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    seeds = np.random.SeedSequence(seed).spawn(jobs)
    budget = (attempts, time_limit, patience)
    started = time.perf_counter()
    if jobs == 1:
        chains = [_Chain(graph, target, seeds[0]).run(*budget, progress, callback)]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_run_chain, graph.adjacency, target, chain_seed, budget, progress and i == 0)
                for i, chain_seed in enumerate(seeds)
            ]
            chains = [future.result() for future in futures]
    elapsed = time.perf_counter() - started
    neighbors, _, _, history, made = min(chains, key=lambda chain: _energy(target, chain[1], chain[2]))
    adjacency = np.zeros((graph.nodes, graph.nodes), dtype=bool)
    np.put_along_axis(adjacency, neighbors, True, axis=1)
    metadata = {
        "method": "optimize",
        "objective": objective if isinstance(objective, str) else float(objective),
        "seed": seed,
        "attempts": made,
        "start_aspl": graph.aspl,
        "start": graph.metadata,
        # best (attempt, ASPL, diameter) at each improvement: `rgp plot aspl` draws it from the file
        "history": [[int(a), float(b), int(d)] for a, b, d in history.tolist()],
    }
    return OptimizeResult(RegularGraph(adjacency, metadata), history, elapsed, made)


def _check_objective(objective, graph):
    """Return "min", "max" or the target distance sum for a float objective."""
    if objective in ("min", "max"):
        return objective
    if isinstance(objective, bool) or not isinstance(objective, numbers.Real) or not math.isfinite(objective):
        raise ValueError(f"`objective` must be 'min', 'max' or a target ASPL (a number), got {objective!r}.")
    if objective < graph.moore_bound:
        raise ValueError(
            f"Target ASPL {objective} is below the Moore bound {graph.moore_bound:.4f} of "
            f"{graph.degree}-regular graphs on {graph.nodes} nodes: no such graph exists."
        )
    return round(objective * graph.nodes * (graph.nodes - 1) / 2)


def _energy(target, total, diameter):
    """The quantity a chain minimises, as a sortable tuple."""
    if target == "min":
        return (diameter, total)
    if target == "max":
        return (0, -total)
    return (0, abs(total - target))


def _run_chain(adjacency, target, seed, budget, progress):
    return _Chain(RegularGraph(adjacency), target, seed).run(*budget, progress, None)


class _Chain:
    """One annealing chain over the neighbour lists of a regular graph.

    Proposals are drawn and scored in batches against the current graph; the
    first accepted one in a batch is applied and the rest are dropped as if
    never drawn, so the result equals a one-at-a-time chain while numpy works
    on many candidate graphs per call.
    """

    def __init__(self, graph, target, seed):
        self.rng = np.random.default_rng(seed)
        self.target = target
        self.nodes, self.degree = graph.nodes, graph.degree
        self.neighbors = graph.neighbors.copy()
        self.adjacency = graph.adjacency.copy()
        self.edges = graph.edges  # a fresh array: updated in place on each accepted swap
        self.total, self.diameter = graph._stats
        self.pairs = self.nodes * (self.nodes - 1) // 2
        self.floor = _moore_total(self.nodes, self.degree) * self.nodes // 2
        # Larger batches amortise numpy's call overhead on small graphs only.
        self.max_batch = int(np.clip(4096 // self.nodes, 1, 64))
        # The start temperature is 0.15 x the median distance-sum change of one
        # swap on the start graph: the best of 0.05..4 x measured at n = 64,
        # k = 4 and 8 (hotter chains wander longer and reach no lower ASPL).
        self.start_temperature = 0.15 * max(1.0, self._typical_change())

    def run(self, attempts, time_limit, patience, progress, callback):
        started = time.perf_counter()
        best = (self.neighbors.copy(), self.total, self.diameter)
        best_energy = self._energy(self.total, self.diameter)
        history = [(0, self.total / self.pairs, self.diameter)]
        attempt, since_best, acceptance = 0, 0, 0.5
        bar = _Progress(attempts, time_limit) if progress else None
        while True:
            elapsed = time.perf_counter() - started
            fraction = max(
                attempt / attempts if attempts else 0.0,
                elapsed / time_limit if time_limit else 0.0,
            )
            if fraction >= 1 or (patience and since_best >= patience) or self._done(best_energy):
                break
            batch = int(np.clip(2 / max(acceptance, 1e-3), 1, self.max_batch))
            if attempts:
                batch = min(batch, attempts - attempt)
            temperature = self.start_temperature * 0.002**fraction if fraction < 0.97 else 0.0
            used, accepted = self._step(batch, temperature)
            attempt += used
            since_best += used
            acceptance = 0.9 * acceptance + 0.1 * (1.0 / used if accepted else 0.0)
            energy = self._energy(self.total, self.diameter)
            if accepted and energy < best_energy:
                best_energy, since_best = energy, 0
                best = (self.neighbors.copy(), self.total, self.diameter)
                history.append((attempt, self.total / self.pairs, self.diameter))
                if callback is not None and callback(attempt, self.total / self.pairs, self.diameter):
                    break
            if bar is not None:
                bar.update(attempt, elapsed, best[1] / self.pairs)
        if bar is not None:
            bar.close(attempt, time.perf_counter() - started, best[1] / self.pairs)
        if history[-1][0] != attempt:
            history.append((attempt, best[1] / self.pairs, best[2]))
        return best[0], best[1], best[2], np.array(history, dtype=HISTORY_DTYPE), attempt

    def _energy(self, total, diameter):
        return _energy(self.target, total, diameter)

    def _done(self, energy):
        if self.target == "min":
            return energy[1] <= self.floor
        return self.target != "max" and energy[1] == 0

    def _typical_change(self):
        candidates, _ = self._propose(self.max_batch)
        if not len(candidates):
            return 1.0
        totals, _ = distance_stats(candidates)
        changes = np.abs(totals[totals >= 0] - self.total)
        return float(np.median(changes)) if changes.size else 1.0

    def _propose(self, batch):
        """Up to `batch` valid swaps as candidate neighbour arrays, plus the swaps.

        Dense graphs have few valid swaps (a complete graph has none), so the
        drawing gives up after a few rounds and may return fewer.
        """
        edge_count = len(self.edges)
        chosen, found = [], 0
        for _ in range(8):
            draw = 2 * batch + 8
            first = self.edges[self.rng.integers(edge_count, size=draw)]
            second = self.edges[self.rng.integers(edge_count, size=draw)]
            flip = self.rng.integers(2, size=draw).astype(bool)
            first[flip] = first[flip][:, ::-1]
            a, b, c, d = first[:, 0], first[:, 1], second[:, 0], second[:, 1]
            valid = (
                (a != c) & (a != d) & (b != c) & (b != d)
                & ~self.adjacency[a, d] & ~self.adjacency[c, b]
            )
            chosen.append(np.stack([a, b, c, d], axis=1)[valid])
            found += int(valid.sum())
            if found >= batch:
                break
        swaps = np.concatenate(chosen)[:batch]
        a, b, c, d = swaps.T
        rows = np.arange(len(swaps))
        candidates = np.repeat(self.neighbors[None], len(swaps), axis=0)
        for node, old, new in ((a, b, d), (b, a, c), (c, d, b), (d, c, a)):
            slot = np.argmax(self.neighbors[node] == old[:, None], axis=1)
            candidates[rows, node, slot] = new
        return candidates, swaps

    def _step(self, batch, temperature):
        """Score one batch; apply its first accepted swap. Returns (attempts used, accepted)."""
        candidates, swaps = self._propose(batch)
        if not len(swaps):
            return batch, False
        cap = self.diameter if self.target == "min" else None
        totals, diameters = distance_stats(candidates, max_levels=cap)
        connected = totals >= 0
        if self.target == "min":
            delta = (totals - self.total).astype(float)
            better_diameter = connected & (diameters < self.diameter)
        elif self.target == "max":
            delta = (self.total - totals).astype(float)
            better_diameter = np.zeros_like(connected)
        else:
            delta = (np.abs(totals - self.target) - abs(self.total - self.target)).astype(float)
            better_diameter = np.zeros_like(connected)
        if temperature > 0:
            threshold = -temperature * np.log(self.rng.random(len(delta)))
        else:
            threshold = np.zeros(len(delta))
        accept = better_diameter | (connected & (delta <= threshold))
        if not accept.any():
            return len(delta), False
        index = int(np.argmax(accept))
        a, b, c, d = swaps[index]
        self.neighbors = candidates[index].copy()
        self.adjacency[a, b] = self.adjacency[b, a] = self.adjacency[c, d] = self.adjacency[d, c] = False
        self.adjacency[a, d] = self.adjacency[d, a] = self.adjacency[c, b] = self.adjacency[b, c] = True
        edge_a = np.flatnonzero((self.edges[:, 0] == min(a, b)) & (self.edges[:, 1] == max(a, b)))[0]
        edge_c = np.flatnonzero((self.edges[:, 0] == min(c, d)) & (self.edges[:, 1] == max(c, d)))[0]
        self.edges[edge_a] = (min(a, d), max(a, d))
        self.edges[edge_c] = (min(c, b), max(c, b))
        self.total, self.diameter = int(totals[index]), int(diameters[index])
        return index + 1, True


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
            f"\r[{'=' * filled}{'.' * (self.width - filled)}] {attempt} attempts "
            f"{elapsed:.1f}s best ASPL {aspl:.4f}"
        )
        sys.stderr.flush()

    def close(self, attempt, elapsed, aspl):
        self.update(attempt, elapsed, aspl, final=True)
        sys.stderr.write("\n")
