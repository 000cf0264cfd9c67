# Two commands on a fresh machine (Python 3.11+, Java 17, Maven):
#   make test   set up .venv, then ruff, mypy and pytest against a real Kafka broker and ClickHouse engine
#   make demo   set up .venv, then run the demo (starts the local broker on 127.0.0.1:9092)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MYPY_DIRS := $(wildcard schemas streams consumers sluicegate infra policies bench)
PYTEST_TIMEOUT ?= 300

.PHONY: setup lint test demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy $(MYPY_DIRS)

test: lint
	$(BIN)/pytest -q -rs --timeout=$(PYTEST_TIMEOUT)

demo: setup
	$(BIN)/sluicegate demo
