# Two commands for a fresh clone: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint types unit bench fuzz mutation clean

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

# Fuzzing (fuzz/README.md): each harness for FUZZ_SECONDS from its committed corpus, with the
# max_len of its .options file (the one ClusterFuzzLite reads); new inputs and crashes go to
# $(FUZZ_WORK)/<harness>/. Non-zero exit if any harness crashed.
FUZZ_SECONDS ?= 60
FUZZ_WORK    ?= .fuzz
FUZZ_HARNESSES := $(patsubst fuzz/fuzz_%.py,%,$(wildcard fuzz/fuzz_*.py))

$(VENV)/.fuzz: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[fuzz]'
	touch $@ $(VENV)/.runtime

fuzz: $(VENV)/.fuzz
	@status=0; for h in $(FUZZ_HARNESSES); do \
		mkdir -p $(FUZZ_WORK)/$$h/new $(FUZZ_WORK)/$$h/crashes; \
		max_len=$$(sed -n 's/^max_len *= *//p' fuzz/fuzz_$$h.options); \
		echo "== fuzz_$$h: $(FUZZ_SECONDS) s, max_len $$max_len"; \
		if $(BIN)/python fuzz/fuzz_$$h.py $(FUZZ_WORK)/$$h/new fuzz/corpus/$$h \
			-max_len=$$max_len -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_WORK)/$$h/crashes/ >$(FUZZ_WORK)/$$h/log 2>&1; then \
			grep -E 'DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss)' \
				$(FUZZ_WORK)/$$h/log; \
		else \
			tail -n 30 $(FUZZ_WORK)/$$h/log; \
			echo "fuzz_$$h FAILED: see $(FUZZ_WORK)/$$h/crashes and $(FUZZ_WORK)/$$h/log"; status=1; \
		fi; \
	done; exit $$status

# Mutation testing ([tool.mutmut] in pyproject.toml; slow, so never part of `make test`): mutmut
# mutates the listed modules, runs per mutant the selected tests that reach the mutated
# function, lists every mutant that is not killed, then prints the score per module.
MUTATION_JOBS ?= 1
MUTANTS ?=

$(VENV)/.mutation: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,interop,mutation]'
	touch $@ $(VENV)/.dev $(VENV)/.runtime

mutation: $(VENV)/.mutation
	GHCB_INTEROP=1 HYPOTHESIS_PROFILE=mutation $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	@echo "== not killed"; $(BIN)/mutmut results
	@echo "== score per module (killed / tested)"; $(BIN)/mutmut results --all true \
		| awk -F': ' '{ m = $$1; sub(/^ +/, "", m); sub(/\.x.*/, "", m); \
			if ($$2 == "skipped") next; n[m]++; if ($$2 == "killed" || $$2 == "timeout") k[m]++ } \
			END { for (m in n) printf "%-24s %5d / %5d  %5.1f%%\n", m, k[m], n[m], 100 * k[m] / n[m] }' \
		| sort

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks .fuzz mutants
