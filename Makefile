# ecom-pipeline. Every target works on a fresh clone; `make demo` and `make test` are the two to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ECOM := $(BIN)/ecom
SAMPLE := data/sample-data.csv
PACKAGES := ecom_core handlers replay warehouse etl bootstrap bench ecom

.PHONY: help install up down demo test lint unit test-unit soak replay etl status reconcile endpoints report bench bench-read clean

help:
	@echo "make demo     start the embedded stack, replay the 417-row sample, run the ETL, print the counts"
	@echo "make test     the test suite (starts its own stack on free ports in a temp dir)"
	@echo "make up/down  start/stop a stack: STACK=embedded|compose|auto (auto: compose if Docker answers)"
	@echo "make replay   replay the full file (ROWS=N for the first N rows)"
	@echo "make etl      run the ETL once;  make status  the operator's view;  make reconcile  per-event proof"
	@echo "make soak     reliability soak with random faults (SOAK_ROWS=N, default the full file)"
	@echo "make report   HTML report + CSV of the analytics views of the running stack (OUT=dir, default reports/)"
	@echo "make bench-read  read-API latency (own stack, >=100k rows; ROWS=N REQUESTS=N)"
	@echo "make bench    ceiling vs ours vs original design on a fresh stack (ROWS=N; default the full file)"

$(BIN)/ecom: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(BIN)/ecom

install: $(BIN)/ecom

# STACK=embedded | compose | auto (default: compose when a Docker engine answers, else embedded).
up: install
	$(ECOM) up --stack $(or $(STACK),auto)

down: install
	$(ECOM) down

# The demo runs on the embedded stack unless STACK says otherwise: no Docker needed.
demo: install
	$(ECOM) up --stack $(or $(STACK),embedded)
	$(ECOM) replay $(SAMPLE)
	$(ECOM) etl run
	@echo "--- reconciliation: every store should hold the sample's 417 events ---"
	$(ECOM) status
	@echo "The stack is still up. Try: $(ECOM) endpoints | $(ECOM) status | make down (to stop it)"

# The import contracts (pyproject.toml [tool.importlinter]), ruff (lint and format) and mypy, then the whole suite.
test: lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast tests alone: tests/unit, no stack (about a minute on 2 cores). `unit` is the same target.
test-unit unit: lint
	$(BIN)/python -m pytest tests/unit

# The reliability soak on more rows than CI uses (SOAK_ROWS, default the full file).
soak: install
	ECOM_SOAK_ROWS=$(or $(SOAK_ROWS),541909) $(BIN)/python -m pytest tests/stack/test_reliability.py -k soak -s

replay: install
	$(ECOM) replay $(if $(ROWS),--rows $(ROWS),)

etl: install
	$(ECOM) etl run

status: install
	$(ECOM) status

reconcile: install
	$(ECOM) reconcile

endpoints: install
	$(ECOM) endpoints

report: install
	$(ECOM) report $(if $(OUT),--out $(OUT),)

# Read-API latency vs a bare DynamoDB Query (not a test; own stack on free ports, ~5-10 min).
bench-read: install
	$(BIN)/python -m bench.read_api $(if $(ROWS),--rows $(ROWS),) $(if $(REQUESTS),--requests $(REQUESTS),)

# A fresh stack of its own (temp dir, free ports); results go to bench/results/.
bench: install
	$(ECOM) bench $(if $(ROWS),--rows $(ROWS),)

clean: down
	rm -rf .data
