# mtlzoo: `make demo` and `make test` work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,edge,plots]"
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlzoo demo --out demo_out

# Two pytest workers on two cores: one TensorFlow thread each (and in the processes the tests start), so the
# workers do not oversubscribe the cores (measured: 621 s against 726 s for the suite at TensorFlow's defaults).
test: $(STAMP)
	TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not benchmark"

bench: $(STAMP)
	$(BIN)/mtlzoo bench all

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out .pytest_cache
