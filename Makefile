.DEFAULT_GOAL := test
.PHONY: .venv compiled lint format test run bench

VENV := .venv
PY := $(VENV)/bin/python
# `make test PYTEST_ARGS='-k publish -x'` narrows the run.
PYTEST_ARGS ?=

.venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The modules on every webhook's path compiled with mypyc (scripts/compile). Again whenever a
# source changes: compiled code holds the types of what it imports as they were checked.
compiled: $(VENV)/.compiled

$(VENV)/.compiled: $(VENV)/.installed scripts/compile $(shell find httpkit router store -name '*.py')
	MYPYC=$(VENV)/bin/mypyc scripts/compile
	touch $@

lint: .venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: .venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint compiled
	$(PY) -m harness services -- $(PY) -m pytest -q $(PYTEST_ARGS)

run: compiled
	$(PY) -m harness services -- scripts/dev-run.sh

# The router against a bare aiohttp ceiling and a naive router (loadtests/bench.py): about four
# minutes; prints the ratio table and saves it under loadtests/results/.
bench: compiled
	$(PY) -m harness services -- $(PY) -m loadtests.bench
