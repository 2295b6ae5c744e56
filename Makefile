# The two commands of the README's quick start, and the checks CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Quick start 1: install, then run the nightly pipeline on the bundled synthetic sample feeds.
demo: install
	$(BIN)/tradesentry demo

# Quick start 2: install, lint (ruff), type-check (mypy), then run the whole test suite (installs
# Debian's chromium for the browser tests, PostgreSQL and Redis for the deployment-tier tests).
test: install
	bash .ci/install-browser
	bash .ci/install-services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/sqlfluff lint dbt_project/models

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf data test-artifacts
