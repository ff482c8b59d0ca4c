# The only entry point for humans and CI. Every target works on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast conformance lint fmt typecheck bench screenshots dups clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(VENV): $(STAMP)

run: $(STAMP)
	@echo "threadkeep: chat at http://127.0.0.1:8000/ , dashboard at http://127.0.0.1:8000/dashboard , API docs at http://127.0.0.1:8000/docs"
	THREADKEEP_BOT=seller $(BIN)/threadkeep serve --store sqlite:///./threadkeep.db --host 127.0.0.1 --port 8000

test: lint typecheck
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

conformance: $(STAMP)
	$(BIN)/pytest tests/conformance

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

screenshots: $(STAMP)
	THREADKEEP_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -m browser tests/web tests/streamlit

dups:
	duplicates --most 40

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist
