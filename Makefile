# ecom-pipeline. Every target works on a fresh clone; `make demo` and `make test` are the two to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ECOM := $(BIN)/ecom
SAMPLE := data/sample-data.csv

.PHONY: help install up down demo test unit replay etl status endpoints clean bench

help:
	@echo "make demo     start the embedded stack, replay the 417-row sample, run the ETL, print the counts"
	@echo "make test     the test suite (starts its own stack on free ports in a temp dir)"
	@echo "make up/down  start/stop the embedded stack (state in .data/)"
	@echo "make replay   replay the full file (ROWS=N for the first N rows)"
	@echo "make etl      run the ETL once;  make status  counts in every store"
	@echo "make bench    ceiling vs ours vs original design on a fresh stack (ROWS=N; default the full file)"

$(BIN)/ecom: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(BIN)/ecom

install: $(BIN)/ecom

up: install
	$(ECOM) up

down: install
	$(ECOM) down

demo: up
	$(ECOM) replay $(SAMPLE)
	$(ECOM) etl run
	@echo "--- reconciliation: every store should hold the sample's 417 events ---"
	$(ECOM) status
	@echo "The stack is still up. Try: $(ECOM) endpoints | $(ECOM) status | make down (to stop it)"

test: install
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest -m "not stack"

replay: install
	$(ECOM) replay $(if $(ROWS),--rows $(ROWS),)

etl: install
	$(ECOM) etl run

status: install
	$(ECOM) status

endpoints: install
	$(ECOM) endpoints

# A fresh stack of its own (temp dir, free ports); results go to bench/results/.
bench: install
	$(ECOM) bench $(if $(ROWS),--rows $(ROWS),)

clean: down
	rm -rf .data
