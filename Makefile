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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.runtime

DEMO_PAGE := spec/vectors/pages/snp_ext_guest_request.bin

demo: $(VENV)/.runtime
	$(BIN)/ghcb page decode $(DEMO_PAGE)
	$(BIN)/ghcb page check $(DEMO_PAGE)

lint: $(VENV)/.dev
	$(BIN)/ruff check ghcb tests fuzz
	$(BIN)/ruff format --check ghcb tests fuzz

types: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev
	$(BIN)/pytest -q

test: lint types unit

bench: $(VENV)/.dev
	$(BIN)/pytest tests/benchmarks -o addopts="" -m benchmark --benchmark-only \
		--benchmark-columns=min,median,mean,rounds --benchmark-sort=name -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
