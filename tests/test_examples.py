"""Smoke tests: the examples run as written, with tiny budgets."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_litert_agrees_with_keras(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--train-samples", "3000", "--epochs", "1",
         "--fine-tune-epochs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    keras_row = re.search(r"accuracy, Keras\s+([\d.]+) %\s+([\d.]+) %", out.stdout)
    litert_row = re.search(r"accuracy, LiteRT\s+([\d.]+) %\s+([\d.]+) %\s+([\d.]+) %", out.stdout)
    assert keras_row and litert_row, out.stdout[-3000:]
    dense, pruned = map(float, keras_row.groups())
    litert_dense, litert_sparse, litert_compact = map(float, litert_row.groups())
    assert abs(litert_dense - dense) <= 0.1 and abs(litert_sparse - pruned) <= 0.1 and abs(litert_compact - pruned) <= 0.1
    assert "compacted    3 layers" in out.stdout
    for name in ("dense.tflite", "sparse.tflite", "compact.tflite", "aspl_history.png", "layer_sparsity.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_tfmot_workflow_pqat_int8_litert_matches_keras_on_real_mnist(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tfmot_workflow.py"), "--train-samples", "6000", "--epochs", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    value = lambda label: float(re.search(rf"{label}\s+([\d.]+)", out.stdout).group(1))
    assert abs(value(r"int8 accuracy \(LiteRT\)") - value(r"PQAT accuracy \(Keras\)")) <= 0.01
    assert value("LiteRT/Keras agreement") >= 0.99
    assert value(r"PQAT accuracy \(Keras\)") > 0.8
    assert "masked weights zero in int8 file: True" in out.stdout
