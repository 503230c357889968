# taskq developer commands. `make check` is what CI runs.
VENV ?= .venv
BIN := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/,)
PY := $(BIN)python

.PHONY: install test lint fmt check bench

install:
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'

test:
	$(PY) -m pytest -q

lint:
	$(BIN)ruff check src tests bench
	$(BIN)ruff format --check src tests bench
	$(BIN)mypy
	$(BIN)lint-imports

fmt:
	$(BIN)ruff format src tests bench
	$(BIN)ruff check --fix src tests bench

check: lint test

bench:
	$(PY) bench/run.py
