# Two commands do all set-up on a fresh machine:
#   make demo   runs Charter's offline demo (charter demo)
#   make test   runs the whole test suite (lint, types, then pytest)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/charter demo --dir charter-demo

lint: $(STAMP)
	$(BIN)/ruff check charter tests bench examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) charter-demo action-items.md
