"""Compact layouts chosen by the estimate or by timing each layer: whole files side by side.

For export_bench.py's VGG-style net and MobileNetV2 224x224, pruned with RGP
at n/k where layout_choice.py found the estimate's picks slower than the
fastest layout (16/4, 64/8, 64/4), each model is exported three ways - dense
(`strip_pruning`, converted as it is), `export_tflite(layout="auto")` (the
estimate) and `export_tflite(layout="measured")` (each masked layer's layouts
and its dense form timed alone on LiteRT; the table in a fresh folder, so its
timing is counted) - and the three files are timed side by side
(`compare_tflite`, 1 thread, median ratio to dense over 9 alternating rounds).

    python benchmarks/layout_measured.py      # about 10 minutes

Writes benchmarks/results/layout_measured.md.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).parent))
from export_bench import MODELS  # noqa: E402

from rgp_keras import compare_tflite, export_tflite, prune_regular_graph, strip_pruning  # noqa: E402
from rgp_keras.plan.latency import LatencyTable  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CASES = ((16, 4), (64, 8), (64, 4))
ROUNDS = 9


def main():
    lines = [
        "# Compact layouts: estimated or measured per layer (`python benchmarks/layout_measured.py`)", "",
        "Whole files, LiteRT 1 thread, latency / the dense file's (median over 9 alternating rounds of "
        "`compare_tflite`, the three files side by side). *auto*: `export_tflite(layout=\"auto\")`, the "
        "estimate; *measured*: `layout=\"measured\"`, each masked layer timed alone in each layout and dense-shaped "
        "(from an empty table: its seconds are the timing's cost).", "",
        "| model | n/k | auto | measured | measured / auto | layers whose layout differs | timing s |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, build in MODELS.items():
            for nodes, degree in CASES:
                pruned = prune_regular_graph(build(), nodes=nodes, degree=degree, seed=0)
                dense = folder / "dense.tflite"
                strip_pruning(pruned).export(str(dense), format="litert", verbose=False)
                auto = export_tflite(pruned, folder / "auto.tflite")
                started = time.perf_counter()
                table = LatencyTable(folder / f"table-{len(lines)}.json")
                measured = export_tflite(pruned, folder / "measured.tflite", layout="measured", latency_table=table)
                seconds = time.perf_counter() - started
                layers = set(auto.compacted) | set(measured.compacted)
                differ = sum(auto.compacted.get(layer, "dense") != measured.compacted.get(layer, "dense")
                             for layer in layers)
                _, on_auto, on_measured = compare_tflite([dense, auto.path, measured.path], rounds=ROUNDS)
                lines.append(f"| {name} | {nodes}/{degree} | {on_auto['ratio']:.3f} | {on_measured['ratio']:.3f} | "
                             f"{on_measured['ratio'] / on_auto['ratio']:.3f} | {differ} of {len(layers)} | "
                             f"{seconds:.0f} |")
                print(lines[-1], flush=True)
    (RESULTS / "layout_measured.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
