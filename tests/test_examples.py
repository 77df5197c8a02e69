"""Smoke tests: the examples run as written, with tiny budgets."""

import contextlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each example runs as written, on real data


def test_demo_runs_end_to_end_and_litert_agrees_with_keras(tmp_path):
    stdout = run_here(ROOT / "examples" / "demo.py", "--train-samples", "3000", "--epochs", "1",
                      "--fine-tune-epochs", "1", "--calibration-samples", "256", "--test-samples", "1000",
                      "--out", tmp_path)
    keras_row = re.search(r"accuracy, Keras\s+([\d.]+) %\s+([\d.]+) %", stdout)
    litert_row = re.search(r"accuracy, LiteRT\s+([\d.]+) %\s+([\d.]+) %\s+([\d.]+) %", stdout)
    assert keras_row and litert_row, stdout[-3000:]
    dense, pruned = map(float, keras_row.groups())
    litert_dense, litert_sparse, litert_compact = map(float, litert_row.groups())
    assert abs(litert_dense - dense) <= 0.1 and abs(litert_sparse - pruned) <= 0.1
    assert abs(litert_compact - pruned) <= 0.1
    assert "compacted    3 layers" in stdout
    one_shot, blind = map(float, re.search(
        r"one-shot, no training\s+([\d.]+) % .*plain RGP, no data: ([\d.]+) %", stdout).groups())
    assert one_shot > max(50.0, blind + 20)  # calibration data keeps the trained model's accuracy before fine-tuning
    for name in ("dense.tflite", "sparse.tflite", "compact.tflite", "aspl_history.png", "layer_sparsity.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_tfmot_workflow_pqat_int8_litert_matches_keras_on_real_mnist(tmp_path):
    stdout = run_here(ROOT / "examples" / "tfmot_workflow.py", "--train-samples", "4000", "--epochs", "1",
                      "--test-samples", "2000", "--out", tmp_path)
    value = lambda label: float(re.search(rf"{label}\s+([\d.]+)", stdout).group(1))
    assert abs(value(r"int8 accuracy \(LiteRT\)") - value(r"PQAT accuracy \(Keras\)")) <= 0.01
    assert value("LiteRT/Keras agreement") >= 0.99
    assert value(r"PQAT accuracy \(Keras\)") > 0.8
    assert "masked weights zero in int8 file: True" in stdout


def run_example(*argv, cwd=None, env=None):
    out = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=600, cwd=cwd,
                         env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def run_here(script, *argv):
    """What an example script prints, run as `python script argv...` but in this test process (TensorFlow is
    imported already: ~8 s less than a process of its own)."""
    printed = io.StringIO()
    with mock.patch.object(sys, "argv", [str(script), *map(str, argv)]), contextlib.redirect_stdout(printed), \
            warnings.catch_warnings():
        warnings.simplefilter("default")  # as in a process of its own: shown, not raised
        runpy.run_path(str(script), run_name="__main__")
    return printed.getvalue()


def readme_blocks(language):
    """The `language` code blocks of the README and of every page in docs/."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [block for page in pages for block in re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)]


PYTHON_BLOCKS = readme_blocks("python")


def test_the_readme_and_docs_hold_the_python_snippets_users_copy():
    written = "".join(PYTHON_BLOCKS)
    assert len(PYTHON_BLOCKS) >= 3  # the Keras 3 quickstart, the tf_keras / TF-MOT snippet, the distiller
    for name in ("model.tflite", "pruned.keras", "pruned.h5", "distilled.tflite"):
        assert f'"{name}"' in written


# one test per block, so that the test workers share them out
@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"block{number}" for number in range(len(PYTHON_BLOCKS))])
def test_every_readme_and_docs_python_snippet_runs_as_written(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    run_example(script, cwd=tmp_path, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})  # its own latency table
    for name in ("model.tflite", "pruned.keras", "pruned.h5", "distilled.tflite"):  # the files it says it writes
        assert f'"{name}"' not in code or (tmp_path / name).is_file(), name


@pytest.mark.filterwarnings("ignore:Calibration data has fewer rows")  # 64 samples for the README's tiny model
def test_every_readme_and_docs_cli_line_runs_as_written(tmp_path, monkeypatch, capsys):
    import keras

    from rgp_keras.cli import main

    keras.utils.set_random_seed(0)
    keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.Conv2D(64, 3),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ]).save(tmp_path / "model.keras")
    np.save(tmp_path / "samples.npy", np.random.default_rng(0).random((64, 8, 8, 3), dtype="float32"))
    monkeypatch.chdir(tmp_path)
    commands = [line.split(" #")[0].split() for block in readme_blocks("bash") for line in block.splitlines()
                if line.startswith("rgp ")]
    assert len(commands) >= 10
    for argv in commands:
        assert main(argv[1:]) == 0, (argv, capsys.readouterr())
    for name in ("graph.npz", "plain.npz", "aspl.png", "pruned.keras", "model.tflite", "adjacency.png", "layers.png",
                 "table.json", "fast.keras", "fast.tflite"):
        assert (tmp_path / name).stat().st_size > 0
    capsys.readouterr()
    assert main(["plan", "model.keras", "--latency", "0.5", "--calibration", "samples.npy", "--table", "table.json",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["output"] is None and plan["layers"][-1]["layer"].startswith("dense")
    assert plan["predicted_ms"] < plan["dense_ms"]


def test_quickstart_example(tmp_path):
    stdout = run_here(ROOT / "examples" / "quickstart.py", "--train-samples", "2000", "--test-samples", "1000",
                         "--out", tmp_path / "q.tflite")
    dense, one_shot, pruned, litert = map(float, re.search(
        r"dense ([\d.]+), RGP one-shot ([\d.]+), RGP ([\d.]+), RGP LiteRT ([\d.]+)", stdout).groups())
    assert one_shot > 0.3
    assert abs(pruned - litert) <= 0.002 and dense > 0.3  # far above chance (0.1) after 32 steps


def test_train_from_scratch_example():
    stdout = run_here(ROOT / "examples" / "train_from_scratch.py", "--epochs", "1", "--train-samples", "5000")
    assert float(re.search(r"87.5 % sparsity: ([\d.]+)", stdout).group(1)) > 0.6


def test_custom_graph_example_reuses_one_graph_file(tmp_path):
    from rgp_keras.cli import main

    graph = tmp_path / "graph.npz"
    assert main(["graph", "--nodes", "32", "--degree", "4", "--seed", "0", "--attempts", "500", "--out", str(graph),
                 "--quiet"]) == 0
    stdout = run_here(ROOT / "examples" / "custom_graph.py", graph)
    assert stdout.count("% pruned") == 2


def test_tensorboard_example_writes_sparsity_logs(tmp_path):
    run_here(ROOT / "examples" / "tensorboard_sparsity.py", "--log-dir", tmp_path, "--epochs", "1",
                "--train-samples", "2000")
    assert list((tmp_path / "sparsity").glob("events.*")) and list((tmp_path / "train").glob("events.*"))


def test_multi_worker_example_trains_two_local_workers():
    stdout = run_example(ROOT / "examples" / "multi_worker.py", "--train-samples", "2000")
    workers = re.findall(r"worker (\d) of 2: test accuracy ([\d.]+), masked weights zero: True", stdout)
    assert len(workers) == 2 and workers[0][1] == workers[1][1]
