# Two commands do all set-up on a fresh machine:
#   make demo   runs Charter's offline demo (charter demo)
#   make test   runs the whole test suite (lint, types, then pytest on SQLite and, side by
#               side with it, the integration, acceptance, chaos and browser suites again on
#               PostgreSQL, whose output follows the SQLite pass's: the tests
#               start a throwaway cluster with the machine's initdb/pg_ctl, or use
#               $CHARTER_TEST_PG_URL; tests/fleet puts PostgreSQL and workers on hosts of
#               their own, network namespaces, which needs root; tests/browser drive Debian's
#               Chromium, which scripts/ensure-chromium installs when it is missing, as root)
# For contributors:
#   make test-load   the suite three times from a fresh clone of HEAD while two
#                    processes burn both cores (changes to timing must pass it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-load lint clean

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
	scripts/ensure-chromium
	CHARTER_TEST_STORE=postgresql $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration tests/acceptance tests/chaos tests/browser > .pg-pass.log 2>&1 & pg=$$!; \
	$(BIN)/python -m pytest -q; lite=$$?; wait $$pg; pgrc=$$?; cat .pg-pass.log; exit $$((lite || pgrc))

test-load:
	scripts/test-under-load 3

clean:
	rm -rf $(VENV) charter-demo action-items.md
