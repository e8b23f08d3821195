# Two entry points: `make serve` and `make test`. Both create .venv and install the pinned packages first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install serve test lint eval-gate clean

install: $(STAMP)

# torch 2.13.0 first: it is the CPU build on this machine's disk; letting pip resolve it later pulls CUDA.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

serve: $(STAMP)
	$(BIN)/rag ingest seeds
	$(BIN)/rag serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
