"""Tests for rgp_keras.graph: regular graphs, ASPL, the Moore bound, optimisation, the file format."""

import json
import os
import subprocess
import sys
import zipfile
from fractions import Fraction

import igraph
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgp_keras.graph import RegularGraph, degree_for_sparsity, moore_bound, optimize
from rgp_keras.graph._bfs import distance_stats


def regular_sizes():
    """(nodes, degree) pairs for which simple regular graphs exist."""
    return (
        st.integers(min_value=6, max_value=80)
        .flatmap(lambda n: st.tuples(st.just(n), st.integers(min_value=2, max_value=min(n - 1, 12))))
        .filter(lambda nk: nk[0] * nk[1] % 2 == 0)
    )


def assert_valid_regular(graph, nodes, degree):
    adjacency = graph.adjacency
    assert adjacency.shape == (nodes, nodes)
    assert np.array_equal(adjacency, adjacency.T)
    assert not adjacency.diagonal().any()
    assert (adjacency.sum(axis=1) == degree).all()
    assert graph.to_igraph().is_connected()
    assert graph.to_igraph().is_simple()


# --- Moore bound ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "nodes, degree, exact",
    [
        (64, 4, Fraction(180, 63)),  # 4 + 2*12 + 3*36 + 4*11
        (64, 8, Fraction(118, 63)),  # 8 + 2*55
        (64, 6, Fraction(147, 63)),  # 6 + 2*30 + 3*27
        (64, 16, Fraction(110, 63)),  # 16 + 2*47
        (32, 4, Fraction(73, 31)),  # 4 + 2*12 + 3*15
    ],
)
def test_moore_bound_equals_hand_computed_values(nodes, degree, exact):
    assert moore_bound(nodes, degree) == pytest.approx(float(exact), abs=1e-12)


@pytest.mark.parametrize(
    "nodes, degree, quoted",
    [(256, 8, 2.7176), (512, 8, 2.9667), (512, 64, 1.8748), (1024, 32, 1.9687), (64, 6, 2.3333)],
)
def test_moore_bound_matches_method_md(nodes, degree, quoted):
    assert moore_bound(nodes, degree) == pytest.approx(quoted, abs=5e-5)


# --- construction -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(regular_sizes(), st.integers(min_value=0, max_value=2**32 - 1))
def test_random_graph_is_connected_simple_regular(size, seed):
    nodes, degree = size
    graph = RegularGraph.random(nodes, degree, seed=seed)
    assert_valid_regular(graph, nodes, degree)
    assert graph.metadata["seed"] == seed


@settings(max_examples=40, deadline=None)
@given(regular_sizes(), st.integers(min_value=0, max_value=1000))
def test_aspl_and_diameter_equal_igraph(size, seed):
    graph = RegularGraph.random(*size, seed=seed)
    reference = graph.to_igraph()
    assert graph.aspl == pytest.approx(reference.average_path_length(), abs=1e-12)
    assert graph.diameter == reference.diameter()


def test_distance_stats_scores_a_graph_and_flags_disconnected():
    two_triangles = np.array([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    ring = np.array([[5, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 0]])
    assert distance_stats(ring) == (6 * 1 + 6 * 2 + 3 * 3, 3)
    assert distance_stats(two_triangles) == (-1, -1)


def test_same_seed_gives_same_graph_and_different_seeds_differ():
    assert RegularGraph.random(64, 8, seed=3) == RegularGraph.random(64, 8, seed=3)
    assert RegularGraph.random(64, 8, seed=3) != RegularGraph.random(64, 8, seed=4)
    seedless = RegularGraph.random(64, 8)
    assert RegularGraph.random(64, 8, seed=seedless.metadata["seed"]) == seedless


def test_ring_lattice_is_the_circulant_graph_with_known_aspl():
    graph = RegularGraph.ring_lattice(64, 4)
    assert_valid_regular(graph, 64, 4)
    assert graph.adjacency[0, [1, 2, 62, 63]].all()
    # node 0 reaches offset j (and -j) in ceil(j / 2) hops: 2 * (2 * (1 + ... + 15) + 16) + 16 = 528
    assert graph.aspl == pytest.approx(528 / 63)
    assert graph.diameter == 16
    assert graph.aspl > RegularGraph.random(64, 4, seed=0).aspl


def test_graph_is_immutable():
    graph = RegularGraph.random(16, 4, seed=0)
    with pytest.raises(ValueError):
        graph.adjacency[0, 1] = False
    with pytest.raises(ValueError):
        graph.neighbors[0, 0] = 5
    with pytest.raises(AttributeError):
        graph.degree = 3


def test_from_adjacency_accepts_ints_and_keeps_the_caller_array():
    adjacency = RegularGraph.random(12, 3, seed=1).adjacency.astype(int)
    before = adjacency.copy()
    graph = RegularGraph.from_adjacency(adjacency)
    adjacency[0, 0] = 7
    assert graph.degree == 3 and graph.adjacency.dtype == bool
    assert not graph.adjacency[0, 0]
    assert np.array_equal(before[1:], adjacency[1:])


@pytest.mark.parametrize(
    "nodes, sparsity, degree",
    [(64, 0.875, 8), (64, 0.75, 16), (64, 0.9375, 4), (16, 0.875, 2), (63, 0.875, 8), (65, 0.5, 32)],
)
def test_degree_for_sparsity_is_nearest_valid_degree(nodes, sparsity, degree):
    assert degree_for_sparsity(nodes, sparsity) == degree
    assert nodes * degree % 2 == 0


# --- optimisation -------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(regular_sizes(), st.integers(min_value=0, max_value=1000), st.sampled_from(["min", "max"]))
def test_optimize_keeps_degree_simplicity_connectivity_and_never_goes_the_wrong_way(size, seed, objective):
    start = RegularGraph.random(*size, seed=seed)
    result = optimize(start, objective, attempts=300, seed=seed)
    assert_valid_regular(result.graph, *size)
    if objective == "min":
        assert (result.graph.diameter, result.graph.aspl) <= (start.diameter, start.aspl)
    else:
        assert result.graph.aspl >= start.aspl
    assert result.graph.aspl == pytest.approx(result.graph.to_igraph().average_path_length())


def test_optimize_min_improves_towards_the_bound_and_records_history():
    start = RegularGraph.random(64, 4, seed=0)
    result = optimize(start, attempts=20_000, seed=0)
    assert result.graph.aspl < start.aspl - 0.15
    assert result.graph.aspl >= result.graph.moore_bound
    history = result.history
    assert history["attempt"][0] == 0 and history["aspl"][0] == pytest.approx(start.aspl)
    assert history["attempt"][-1] == result.attempts == 20_000
    keys = list(zip(history["diameter"], history["aspl"]))
    assert keys == sorted(keys, reverse=True)  # (diameter, ASPL) never gets worse
    assert history["aspl"][-1] == pytest.approx(result.graph.aspl)


def test_optimize_reaches_the_moore_bound_for_64_nodes_degree_16():
    result = optimize(RegularGraph.random(64, 16, seed=0), seed=0)
    assert result.graph.diameter == 2
    assert result.graph.aspl == pytest.approx(110 / 63)
    assert result.attempts < 10_000  # stops once the bound is reached


@pytest.mark.parametrize("nodes, degree", [(64, 63), (64, 62), (16, 14)])
def test_optimize_returns_at_once_when_every_graph_meets_the_bound(nodes, degree):
    # Near-complete graphs have almost no valid swaps and are already optimal.
    start = RegularGraph.random(nodes, degree, seed=0)
    result = optimize(start, seed=0)
    assert result.attempts == 0 and result.graph == start and result.elapsed < 5


def test_optimize_is_reproducible_with_a_seed():
    start = RegularGraph.random(32, 4, seed=5)
    assert optimize(start, attempts=3000, seed=9).graph == optimize(start, attempts=3000, seed=9).graph


def test_optimize_target_aspl_lands_near_the_target():
    start = RegularGraph.random(64, 4, seed=0)
    ring = RegularGraph.ring_lattice(64, 4)
    target = (start.aspl + ring.aspl) / 2
    result = optimize(start, target, attempts=50_000, seed=0)
    assert abs(result.graph.aspl - target) < 0.01


def test_optimize_with_jobs_runs_parallel_chains_and_keeps_the_best():
    start = RegularGraph.random(32, 4, seed=2)
    result = optimize(start, attempts=2000, seed=1, jobs=2)
    assert_valid_regular(result.graph, 32, 4)
    assert result.graph.aspl < start.aspl
    assert result.attempts == 2000 or result.graph.gap == 0  # a chain stops once it reaches the Moore bound


def test_callback_sees_each_improvement_and_can_stop_the_run():
    seen = []

    def callback(attempt, aspl, diameter):
        seen.append(aspl)
        return len(seen) == 3

    result = optimize(RegularGraph.random(64, 4, seed=0), attempts=50_000, seed=0, callback=callback)
    assert len(seen) == 3 and result.attempts < 50_000
    assert seen == sorted(seen, reverse=True)


def test_patience_stops_a_stalled_run():
    result = optimize(RegularGraph.random(16, 4, seed=0), attempts=10**6, patience=500, seed=0)
    assert result.attempts < 10**6


@settings(max_examples=25, deadline=None)
@given(regular_sizes(), st.integers(min_value=0, max_value=1000))
def test_compiled_distance_sum_equals_igraph_and_stops_early_above_the_bound(size, seed):
    import rgp_keras.graph._anneal as kernel

    graph = RegularGraph.random(*size, seed=seed)
    nodes = graph.nodes
    neighbors = graph.neighbors.astype(np.int64)
    distances = np.array(graph.to_igraph().distances())
    sources = 1 + seed % nodes
    scratch = kernel.scratch(nodes, sources)
    total, diameter = kernel.distance_sum(neighbors, sources, kernel.NEVER, *scratch)
    assert total == distances[:sources].sum() and diameter == distances[:sources].max()
    assert kernel.distance_sum(neighbors, sources, total - 1, *scratch) == (kernel.REJECTED, kernel.REJECTED)
    assert kernel.distance_sum(neighbors, sources, total, *scratch) == (total, diameter)


@pytest.mark.parametrize("nodes, degree, symmetry", [(64, 8, 8), (30, 4, 3), (64, 4, 64), (64, 5, 8), (30, 3, 5)])
def test_symmetric_search_keeps_the_rotation_and_improves(nodes, degree, symmetry):
    start = RegularGraph.random(nodes, degree, seed=1, symmetry=symmetry)
    assert start.is_symmetric(symmetry) and start.metadata["symmetry"] == symmetry
    assert RegularGraph.random(nodes, degree, seed=1, symmetry=symmetry) == start  # reproducible
    assert_valid_regular(start, nodes, degree)
    result = optimize(start, attempts=5000, seed=0, symmetry=symmetry)
    assert_valid_regular(result.graph, nodes, degree)
    assert result.graph.is_symmetric(symmetry)
    assert result.graph.aspl < start.aspl
    assert result.graph.metadata["symmetry"] == symmetry
    assert not RegularGraph.random(64, 8, seed=1).is_symmetric(8)


@pytest.mark.slow
def test_default_search_picks_the_symmetry_and_reaches_below_1_96_for_64_nodes_degree_8():
    # The plain chain stalls near 1.97 here; symmetry 8 gets <= 1.96, and the default must get what the best
    # option gets. A budget in attempts, not seconds, so the result does not depend on the machine: 2M attempts
    # from seed 0 reach 1.9563 (12 s here); graph_bench.py measures the quality reached in 60 s.
    result = optimize(RegularGraph.random(64, 8, seed=0), attempts=2_000_000, seed=0)
    assert result.symmetry == 8 and result.graph.metadata["symmetry"] == 8 and result.graph.is_symmetric(8)
    assert result.graph.aspl <= 1.96
    assert optimize(RegularGraph.random(64, 4, seed=0), attempts=1000, seed=0).symmetry == 1  # no gain at k < 8
    start = RegularGraph.random(64, 8, seed=0)
    assert optimize(start, attempts=1000, seed=0, symmetry=1).graph.metadata["start"] == start.metadata


def test_time_limit_bounds_the_run():
    result = optimize(RegularGraph.random(256, 8, seed=0), time_limit=0.5, seed=0)
    assert result.elapsed < 3


# --- save / load --------------------------------------------------------------------------------

def test_save_load_round_trip_keeps_adjacency_and_metadata(tmp_path):
    graph = optimize(RegularGraph.random(64, 8, seed=1), attempts=500, seed=2).graph
    path = tmp_path / "graph.npz"
    graph.save(path)
    loaded = RegularGraph.load(path)
    assert loaded == graph
    assert loaded.metadata == graph.metadata
    assert loaded.metadata["method"] == "optimize" and loaded.metadata["seed"] == 2
    with zipfile.ZipFile(path) as archive:  # non-pickle: plain .npy members
        assert sorted(archive.namelist()) == ["adjacency.npy", "format.npy", "metadata.npy", "version.npy"]


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        contents = {key: archive[key] for key in archive.files}
    contents.update(changes)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})


def test_load_rejects_truncated_file(tmp_path):
    path = tmp_path / "g.npz"
    RegularGraph.random(16, 4, seed=0).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="not a readable graph file"):
        RegularGraph.load(path)


def test_load_rejects_foreign_npz_and_text(tmp_path):
    foreign = tmp_path / "weights.npz"
    np.savez(foreign, kernel=np.zeros(3))
    with pytest.raises(ValueError, match="not an rgp_keras graph file"):
        RegularGraph.load(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable graph file"):
        RegularGraph.load(text)


def test_load_rejects_future_format_version(tmp_path):
    path = tmp_path / "g.npz"
    RegularGraph.random(16, 4, seed=0).save(path)
    _rewrite(path, version=np.array(99))
    with pytest.raises(ValueError, match="format version 99.*up to 1"):
        RegularGraph.load(path)


def test_load_rejects_metadata_inconsistent_with_adjacency(tmp_path):
    path = tmp_path / "g.npz"
    graph = RegularGraph.random(16, 4, seed=0)
    graph.save(path)
    _rewrite(path, metadata=np.array(json.dumps({**graph.metadata, "aspl": 1.5})))
    with pytest.raises(ValueError, match="inconsistent"):
        RegularGraph.load(path)


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, format=np.array(["x", {"evil": 1}], dtype=object))
    with pytest.raises(ValueError):
        RegularGraph.load(path)


def test_failed_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "missing_dir" / "g.npz"
    with pytest.raises(OSError):
        RegularGraph.random(16, 4, seed=0).save(target)
    assert not target.exists()


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "nodes, degree, error, message",
    [
        (2, 2, ValueError, r"`nodes` must be an integer >= 3, got 2"),
        (10, 1, ValueError, r"`degree` must be an integer >= 2, got 1"),
        (10, 10, ValueError, r"degree at most 9"),
        (10, 12, ValueError, r"degree at most 9"),
        (9, 3, ValueError, r"nodes \* degree must be even"),
        (64.0, 4, TypeError, r"`nodes` must be an integer, got 64.0"),
        (64, True, TypeError, r"`degree` must be an integer, got True"),
        (float("nan"), 4, TypeError, r"`nodes` must be an integer, got nan"),
        (-64, 4, ValueError, r"`nodes` must be an integer >= 3, got -64"),
        ("64", 4, TypeError, r"`nodes` must be an integer"),
    ],
)
def test_bad_sizes_are_named(nodes, degree, error, message):
    with pytest.raises(error, match=message):
        RegularGraph.random(nodes, degree)
    with pytest.raises(error, match=message):
        moore_bound(nodes, degree)


def test_ring_lattice_odd_degree_says_what_is_supported():
    with pytest.raises(ValueError, match="even degrees only, got degree=3.*RegularGraph.random"):
        RegularGraph.ring_lattice(64, 3)


@pytest.mark.parametrize(
    "sparsity, error, message",
    [
        (0.0, ValueError, r"in \(0, 1\)"),
        (1.0, ValueError, r"in \(0, 1\)"),
        (-0.5, ValueError, r"in \(0, 1\)"),
        (float("nan"), ValueError, r"in \(0, 1\)"),
        ("0.5", TypeError, r"must be a number"),
        (0.999, ValueError, r"needs degree 0.064.*accepted"),
        (0.99, ValueError, r"needs degree 0.64 on 64 nodes.*between 0.01562 and 0.9688 is accepted"),
    ],
)
def test_bad_sparsity_is_named(sparsity, error, message):
    with pytest.raises(error, match=message):
        degree_for_sparsity(64, sparsity)


def _valid_adjacency():
    return RegularGraph.random(8, 3, seed=0).adjacency.astype(int)


def _with(array, i, j, value):
    array = array.copy()
    array[i, j] = value
    return array


@pytest.mark.parametrize(
    "adjacency, message",
    [
        (np.zeros((4, 5)), "square"),
        (np.zeros(8), "square"),
        (_with(_valid_adjacency(), 0, 0, 2), "0/1"),
        (_valid_adjacency() * 0.5, "0/1"),
        (np.ones((4, 4)), "self-loops"),
        (np.triu(_valid_adjacency()), "symmetric"),
        (np.eye(6, k=1) + np.eye(6, k=-1), "not regular"),
        (np.kron(np.eye(2), np.ones((4, 4)) - np.eye(4)), "disconnected"),
        (np.ones((2, 2)) - np.eye(2), "at least 3 nodes"),
    ],
)
def test_bad_adjacency_is_named(adjacency, message):
    with pytest.raises(ValueError, match=message):
        RegularGraph.from_adjacency(adjacency)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"attempts": 0}, ValueError, r"`attempts` must be an integer >= 1, got 0"),
        ({"attempts": -5}, ValueError, r"`attempts` must be an integer >= 1"),
        ({"time_limit": 0}, ValueError, r"`time_limit` must be a finite number > 0, got 0"),
        ({"time_limit": -1.0}, ValueError, r"`time_limit`"),
        ({"jobs": 0}, ValueError, r"`jobs` must be an integer >= 1"),
        ({"objective": "fast"}, ValueError, r"'min', 'max' or a target ASPL"),
        ({"objective": 1.0}, ValueError, r"below the Moore bound"),
        ({"jobs": 2, "callback": print}, ValueError, r"only supported with jobs=1"),
        ({"symmetry": 0}, ValueError, r"`symmetry` must be an integer >= 1, got 0"),
        ({"symmetry": 3}, ValueError, r"`symmetry` must divide the node count .*symmetry=1"),
        ({"symmetry": 4}, ValueError, r"not\. Start from RegularGraph\.random\(16, 4, symmetry=4\)"),
    ],
)
def test_bad_optimize_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        optimize(RegularGraph.random(16, 4, seed=0), **kwargs)


@pytest.mark.parametrize(
    "nodes, degree, symmetry, error, message",
    [
        (64, 8, 3, ValueError, "must divide the node count"),
        (64, 8, 2.5, TypeError, "`symmetry` must be an integer"),
    ],
)
def test_bad_symmetry_for_a_random_graph_is_named(nodes, degree, symmetry, error, message):
    with pytest.raises(error, match=message):
        RegularGraph.random(nodes, degree, seed=0, symmetry=symmetry)


# --- packaging ----------------------------------------------------------------------------------

def test_importing_the_graph_engine_does_not_import_tensorflow():
    code = ("import sys, rgp_keras, rgp_keras.graph; "
            "print(any(m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'numba') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_saved_graph_files_get_the_umask_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        RegularGraph.ring_lattice(8, 2).save(tmp_path / "g.npz")
    finally:
        os.umask(previous)
    assert (tmp_path / "g.npz").stat().st_mode & 0o777 == 0o644


def test_random_graphs_leave_every_global_random_state_alone():
    import random

    def draws():
        return igraph.Graph.Erdos_Renyi(n=30, p=0.3).get_edgelist(), random.random(), np.random.random()

    for generator in (random.Random(123), random.Random(7)):  # a user's own igraph generator, not the default
        igraph.set_random_number_generator(generator)
        random.seed(5), np.random.seed(5)
        state = generator.getstate()
        expected = draws()
        generator.setstate(state)
        random.seed(5), np.random.seed(5)
        RegularGraph.random(64, 8, seed=0)
        RegularGraph.random(64, 8)
        assert draws() == expected
    igraph.set_random_number_generator(random)


@pytest.mark.slow
def test_the_first_compile_is_announced_once_and_later_processes_load_the_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # an empty cache: what a fresh checkout has
    run = lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    # warm_up optimises 12 graphs (every path optimize takes): the compile is announced at the first only
    assert run("import rgp_keras.graph as g; g.warm_up()").stderr.count("compiling the graph optimiser (one time") == 1
    # what prune_regular_graph(sparsity=0.875) and `rgp graph --sparsity 0.875` reach (64/8, symmetric search),
    # and a degree < 8 (no symmetry), each the first optimisation of its process
    for degree in (8, 4):
        second = run(
            "import time; started = time.perf_counter()\n"
            "from rgp_keras.graph import RegularGraph, optimize\n"
            f"optimize(RegularGraph.random(64, {degree}, seed=1), attempts=20_000, seed=1)\n"
            "print(time.perf_counter() - started)"
        )
        assert "compiling" not in second.stderr and float(second.stdout) < 3.0, (degree, second.stdout)
