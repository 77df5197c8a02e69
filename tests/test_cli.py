"""Tests for the `rgp` command line tool."""

import os
import re
import subprocess
import sys

import pytest

from rgp_keras.cli import main
from rgp_keras.graph import RegularGraph


def test_version_and_help_run_as_console_script():
    out = subprocess.run([sys.executable, "-m", "rgp_keras.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rgp_keras ")
    out = subprocess.run([sys.executable, "-m", "rgp_keras.cli", "graph", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example: rgp graph" in out.stdout
    help_text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "with --attempts (or the default budget) the same seed gives the same graph" in help_text
    assert ("a --time-limit run stops after however many attempts this machine made in that time, so the same "
            "seed is not guaranteed to give the same graph") in help_text


def test_graph_says_when_the_nearest_degree_is_far_from_the_sparsity_asked(tmp_path):
    with pytest.warns(UserWarning, match=r"Asked for sparsity 0\.75; on 4 nodes .* graph 4/2 prunes 0\.5, 25\.0 "
                                         r"points less than asked: nodes=64, 60, .* give 0\.75 exactly"):
        assert main(["graph", "--nodes", "4", "--sparsity", "0.75", "--out", str(tmp_path / "g.npz"), "--quiet"]) == 0


def test_graph_writes_an_optimised_graph_and_reports(tmp_path, capsys):
    out = tmp_path / "g.npz"
    plot = tmp_path / "aspl.png"
    code = main(["graph", "--nodes", "64", "--sparsity", "0.875", "--seed", "0", "--attempts", "3000",
                 "--out", str(out), "--plot", str(plot), "--quiet"])
    assert code == 0
    graph = RegularGraph.load(out)
    assert (graph.nodes, graph.degree) == (64, 8)
    printed = capsys.readouterr().out
    assert f"-> {graph.aspl:.4f}" in printed and "Moore bound 1.8730" in printed and "gap" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_with_symmetry_writes_a_rotation_invariant_graph(tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert main(["graph", "--nodes", "64", "--degree", "8", "--symmetry", "8", "--seed", "0", "--attempts", "2000",
                 "--out", str(out), "--quiet"]) == 0
    graph = RegularGraph.load(out)
    assert graph.is_symmetric(8) and graph.metadata["symmetry"] == 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["graph", "--nodes", "63", "--degree", "3"], "nodes * degree must be even"),
        (["graph", "--nodes", "64", "--sparsity", "1.5"], "in (0, 1)"),
        (["graph", "--nodes", "64", "--degree", "8", "--attempts", "0"], "--attempts must be an integer >= 1"),
        (["graph", "--nodes", "64", "--degree", "8", "--objective", "1.0"], "below the Moore bound"),
        (["graph", "--nodes", "64", "--degree", "8", "--symmetry", "3"], "must divide the node count"),
    ],
)
def test_graph_bad_input_prints_one_line_and_exits_nonzero(tmp_path, capsys, argv, message):
    out = tmp_path / "g.npz"
    assert main(argv + ["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_option_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["graph", "--bogus"])
    assert stop.value.code == 2


@pytest.fixture
def model_file(tmp_path, mlp_model):
    path = tmp_path / "model.keras"
    mlp_model.save(path)
    return path


def test_prune_and_summary_commands(tmp_path, model_file, capsys):
    out = tmp_path / "pruned.keras"
    assert main(["prune", str(model_file), "--degree", "4", "--nodes", "16", "--seed", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "16/4" in printed and f"-> {out}" in printed
    assert main(["summary", str(out)]) == 0
    assert "16/4" in capsys.readouterr().out
    import keras

    from rgp_keras import RegularGraphPruning

    assert sum(isinstance(layer, RegularGraphPruning) for layer in keras.saving.load_model(out).layers) == 2


def test_prune_with_calibration_data(tmp_path, model_file, capsys):
    import numpy as np

    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(0).normal(size=(300, 64)).astype("float32"))
    out = tmp_path / "pruned.keras"
    assert main(["prune", str(model_file), "--degree", "4", "--nodes", "16", "--seed", "0", "-o", str(out),
                 "--calibration", str(samples), "--calibration-samples", "200", "--calibration-mixes", "50",
                 "--calibration-batch-size", "64", "--graph-candidates", "2"]) == 0
    printed = capsys.readouterr().out
    assert "data-aware pruning" in printed and "output error" in printed and "importance kept" in printed
    assert "reconstruction fit on 200 samples + 50 mixes of pairs" in printed
    assert "of 2 candidates: output error on the calibration samples" in printed
    assert out.exists()


def test_prune_channels_then_masks(tmp_path, model_file, capsys):
    import keras
    import numpy as np

    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(0).normal(size=(200, 64)).astype("float32"))
    thin, both = tmp_path / "thin.keras", tmp_path / "both.keras"
    assert main(["prune", str(model_file), "--channels", "0.5", "-o", str(thin)]) == 0
    assert "in 128 -> 64, out 128 -> 64" in capsys.readouterr().out
    assert [layer.units for layer in keras.saving.load_model(thin).layers] == [64, 64, 64, 10]
    assert main(["prune", str(model_file), "--channels-macs", "0.5", "--degree", "2", "--nodes", "8",
                 "--calibration", str(samples), "-o", str(both)]) == 0
    printed = capsys.readouterr().out
    assert "8/2" in printed and "channels chosen by least squares" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "MODEL", "-o", "OUT"], "(fewer channels), or both (channels first); for a latency, `rgp plan`"),
        (["plan", "MODEL", "--latency", "1.5", "--calibration", "GOODNPY", "-o", "OUT"], "--latency must be in (0, 1)"),
        (["plan", "MODEL", "--latency", "0.5", "--calibration", "GOODNPY", "--threads", "0"],
         "--threads must be an integer >= 1"),
        (["plan", "MODEL", "--latency", "0.5", "--calibration", "GOODNPY", "--table", "none.json"],
         "--table: no latency table at none.json"),
        (["plan", "MODEL", "--latency", "0.5", "--calibration", "GOODNPY", "-o", "x.h5"], "must end in .keras"),
        (["prune", "MODEL", "--channels", "1.5", "-o", "OUT"], "--channels must be in (0, 1]"),
        (["prune", "MODEL", "--channels-macs", "0.0001", "-o", "OUT"], "--channels-macs 0.0001 is below"),
        (["prune", "MODEL", "--channels", "0.5", "--keep-channel-order", "-o", "OUT"],
         "--keep-channel-order needs --sparsity, --degree or --graph"),
        (["prune", "MODEL", "--degree", "4", "-o", "OUT", "--calibration", "missing.npy"], "No such calibration file"),
        (["prune", "MODEL", "--degree", "4", "--nodes", "16", "-o", "OUT", "--calibration", "BADNPY"], "shape (5, 3)"),
        (["prune", "MODEL", "--degree", "4", "-o", "OUT", "--calibration-samples", "5"], "needs --calibration"),
        (["prune", "MODEL", "--degree", "4", "-o", "OUT", "--calibration-mixes", "0"], "--calibration-mixes needs "
                                                                                       "--calibration"),
        (["prune", "MODEL", "--degree", "4", "-o", "OUT", "--graph-candidates", "3"], "--graph-candidates needs "
                                                                                      "--calibration"),
        (["prune", "MODEL", "--degree", "4", "--nodes", "16", "-o", "OUT", "--calibration", "GOODNPY",
          "--calibration-mixes", "-3"], '--calibration-mixes must be "auto" or an integer >= 0'),
        (["prune", "MODEL", "--degree", "4", "-o", "OUT", "--calibration-batch-size", "8"],
         "--calibration-batch-size needs --calibration"),
        (["prune", "MODEL", "--degree", "4", "--nodes", "16", "-o", "OUT", "--calibration", "GOODNPY",
          "--calibration-batch-size", "0"], "--calibration-batch-size must be an integer >= 1"),
        (["prune", "missing.keras", "--degree", "4", "-o", "OUT"], "No such model file"),
        (["prune", "MODEL", "--degree", "4", "-o", "out.h5"], "must end in .keras"),
        (["prune", "MODEL", "--degree", "3", "--nodes", "15", "-o", "OUT"], "nodes * degree must be even"),
        (["prune", "MODEL", "--graph", "missing.npz", "-o", "OUT"], "missing.npz"),
        (["prune", "MODEL", "--graph", "missing.npz", "--nodes", "64", "-o", "OUT"], "--nodes conflicts with --graph"),
        (["graph", "--nodes", "16", "--degree", "4", "--out", "OUT.json"], "--out must end in .npz"),
        (["graph", "--nodes", "2", "--degree", "4", "--out", "g.npz"], "--nodes must be an integer >= 3, got 2"),
        (["bench", "x.tflite", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["summary", "notes.txt"], "No such model file"),
    ],
)
def test_prune_bad_input_is_one_line_and_leaves_no_output(tmp_path, model_file, capsys, argv, message):
    out = tmp_path / "out.keras"
    import numpy as np

    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((5, 3), "float32"))
    good = tmp_path / "good.npy"
    np.save(good, np.ones((20, 64), "float32"))
    names = {"MODEL": model_file, "OUT": out, "BADNPY": bad, "GOODNPY": good, "OUT.json": tmp_path / "g.json"}
    argv = [str(names.get(a, a)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "g.json").exists()


def test_a_bug_is_not_passed_off_as_a_user_error(monkeypatch):
    import rgp_keras.cli

    def broken(args):
        raise TypeError("unsupported operand type(s)")  # what a bug, not a validation, raises

    monkeypatch.setattr(rgp_keras.cli, "_graph", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["graph", "--nodes", "16", "--degree", "4", "--out", "g.npz"])


def test_commands_keep_tensorflow_quiet_unless_verbose(model_file):
    command = [sys.executable, "-m", "rgp_keras.cli", "summary", str(model_file)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = subprocess.run(command[:3] + ["--verbose"] + command[3:], capture_output=True, text=True, env=env)
    assert verbose.returncode == 0 and verbose.stderr


@pytest.fixture
def pruned_file(tmp_path, mlp_model):
    from rgp_keras import prune_regular_graph

    path = tmp_path / "pruned.keras"
    prune_regular_graph(mlp_model, degree=2, nodes=16, seed=0).save(path)
    return path


def test_export_and_bench_commands(tmp_path, pruned_file, capsys):
    import numpy as np

    out = tmp_path / "model.tflite"
    assert main(["export", str(pruned_file), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dense, float32" in printed and "MACs/sample" in printed and out.is_file()
    assert "LiteRT ran the file" in printed
    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(0).random((20, 64)).astype("float32"))
    int8 = tmp_path / "int8.tflite"
    assert main(["export", str(pruned_file), "-o", str(int8), "--quantize", "int8", "--calibration", str(samples)]) == 0
    assert "dense, int8" in capsys.readouterr().out
    scattered = tmp_path / "scatter.tflite"
    assert main(["export", str(pruned_file), "-o", str(scattered), "--layout", "scatter"]) == 0
    assert "scatter)" in capsys.readouterr().out
    assert main(["export", str(pruned_file), "-o", str(tmp_path / "four.tflite"), "--threads", "4"]) == 0
    printed = capsys.readouterr().out  # the hidden 128->128 Dense on vectors stays dense: the reason names 4 threads
    assert re.search(r"compacted\s+0 layers", printed) and "with 4 thread(s)" in printed
    assert main(["bench", str(out), "--runs", "5"]) == 0
    assert "median" in capsys.readouterr().out
    assert main(["bench", str(out), str(scattered), str(out), "--runs", "3", "--rounds", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()  # the first file is the baseline; the same file again is ~1
    assert lines[1].split()[-2:] == ["1.000", "(1.000-1.000)"] and lines[2].startswith(str(scattered))
    assert 0.5 < float(lines[3].split()[-2]) < 2 and lines[-1].startswith("3 alternating rounds of 3 runs")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "missing.keras", "-o", "OUT"], "No such model file"),
        (["export", "MODEL", "-o", "OUT", "--quantize", "int8"], "--quantize int8 needs --calibration"),
        (["export", "MODEL", "-o", "OUT", "--quantize", "int8", "--calibration", "nope.npy"], "No such calibration"),
        (["export", "MODEL", "-o", "OUT", "--calibration", "x.npy"], "only used with --quantize int8"),
        (["export", "MODEL", "-o", "OUT", "--sparse", "--layout", "gather"], "--layout and --threads choose compact"),
        (["export", "MODEL", "-o", "OUT", "--sparse", "--threads", "2"], "they do not apply with --sparse"),
        (["export", "MODEL", "-o", "OUT", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["export", "MODEL", "-o", "model.onnx"], "must end with .tflite"),
        (["bench", "MODEL"], "not a .tflite file"),
        (["bench", "missing.tflite"], "No .tflite file"),
        (["bench", "OUT", "MODEL"], "not a .tflite file"),
        (["bench", "x.tflite", "--rounds", "3"], "--rounds alternates two or more files"),
        (["bench", "a.tflite", "b.tflite", "--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
    ],
)
def test_export_and_bench_bad_input(tmp_path, pruned_file, capsys, argv, message):
    out = tmp_path / "out.tflite"
    argv = [str(pruned_file) if a == "MODEL" else str(out) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_json_output_and_plots(tmp_path, pruned_file, capsys):
    import json

    graph_file = tmp_path / "g.npz"
    assert main(["graph", "--nodes", "16", "--degree", "4", "--seed", "0", "--attempts", "200",
                 "--out", str(graph_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nodes"] == 16 and result["aspl"] <= result["aspl_before"]
    assert main(["summary", str(pruned_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["kept_params"] < summary["totals"]["params"] and summary["layers"][1]["graph"] == "16/2"
    tflite = tmp_path / "m.tflite"
    assert main(["export", str(pruned_file), "-o", str(tflite), "--layout", "gather", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_bytes"] == tflite.stat().st_size and report["compacted"]
    assert main(["bench", str(tflite), "--runs", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["median_ms"] > 0
    assert main(["bench", str(tflite), str(tflite), "--runs", "2", "--rounds", "2", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [f["rounds"] for f in files] == [2, 2] and files[0]["ratio"] == 1.0 and files[1]["median_ms"] > 0
    for kind, source in (("aspl", graph_file), ("adjacency", graph_file), ("layers", pruned_file)):
        png = tmp_path / f"{kind}.png"
        assert main(["plot", kind, str(source), "-o", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "adjacency", "missing.npz", "-o", "OUT"], "No such graph file"),
        (["plot", "layers", "missing.keras", "-o", "OUT"], "No such model file"),
        (["plot", "layers", "MODEL", "-o", "out.jpg"], "must end in .png"),
        (["plot", "aspl", "RANDOM_GRAPH", "-o", "OUT"], "has no optimisation history"),
    ],
)
def test_plot_bad_input(tmp_path, pruned_file, capsys, argv, message):
    from rgp_keras.graph import RegularGraph

    out = tmp_path / "out.png"
    RegularGraph.random(16, 4, seed=0).save(tmp_path / "random.npz")
    names = {"MODEL": pruned_file, "OUT": out, "RANDOM_GRAPH": tmp_path / "random.npz"}
    argv = [str(names.get(a, a)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    script = (
        "import matplotlib; matplotlib.use('svg')\n"
        "from rgp_keras.graph import RegularGraph\n"
        "from rgp_keras.plots import plot_adjacency\n"
        f"plot_adjacency(RegularGraph.ring_lattice(8, 2), {str(tmp_path / 'a.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "svg" and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
