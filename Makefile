.DEFAULT_GOAL := test
.PHONY: .venv lint format test run bench

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

lint: .venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: .venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m harness services -- $(PY) -m pytest -q $(PYTEST_ARGS)

run: .venv
	$(PY) -m harness services -- scripts/dev-run.sh

# The router against a bare aiohttp ceiling and a naive router (loadtests/bench.py): about four
# minutes; prints the ratio table and saves it under loadtests/results/.
bench: .venv
	$(PY) -m harness services -- $(PY) -m loadtests.bench
