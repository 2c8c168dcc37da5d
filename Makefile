# Two commands for a fresh clone: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint types unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,interop]'
	touch $@ $(VENV)/.runtime

# The main job: a guest asks for a report and certificates, the reference KVM and VMM answer,
# the simulated firmware signs, the guest verifies (ghcb/demo.py).
demo: $(VENV)/.runtime
	$(BIN)/ghcb demo

lint: $(VENV)/.dev
	$(BIN)/ruff check ghcb tests fuzz
	$(BIN)/ruff format --check ghcb tests fuzz

types: $(VENV)/.dev
	$(BIN)/mypy

# GHCB_INTEROP=1: the interop tests must run (a missing omne-attest fails, never skips).
unit: $(VENV)/.dev
	GHCB_INTEROP=1 $(BIN)/pytest -q

test: lint types unit

bench: $(VENV)/.dev
	$(BIN)/pytest tests/benchmarks -o addopts="" -m benchmark --benchmark-only \
		--benchmark-columns=min,median,mean,rounds --benchmark-sort=name -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
