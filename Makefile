# wellpanel: the two commands are `make demo` and `make test`; both work from a clean clone on
# Debian (they create .venv and install what is missing). `make help` lists the rest.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_DB ?= build/demo.db
# Extra `wellpanel demo` arguments, e.g. `make demo DEMO_ARGS=--no-seed` (an empty study).
DEMO_ARGS ?=
# pytest-xdist workers (one per CPU by default; 0 runs in one process) and extra pytest
# arguments, e.g. `make test PYTEST_ARGS="-m 'not browser'"`.
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=

# Playwright drives Debian's /usr/bin/chromium; it must never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHON

.PHONY: help venv install install-dev system-deps pg-install demo test test-at lint format bench \
	bench-deps \
	clean distclean

help:
	@echo "make demo       run the demo server (SQLite, default study seeded with simulated"
	@echo "                participants) on http://$(HOST):$(PORT); DEMO_ARGS=--no-seed for none"
	@echo "make test       ruff check + the whole test suite (SQLite, PostgreSQL, SMTP, Chromium)"
	@echo "make test-at AT=2031-03-10  the test suite with the system clock moved to that date"
	@echo "                (Debian's faketime; proves no test depends on today's date)"
	@echo "make lint       ruff check"
	@echo "make format     ruff format + ruff check --fix"
	@echo "make bench      run each bench/*.py (JSON lines); bench-deps installs what they need"
	@echo "                (postgresql, wrk)"
	@echo "make system-deps  install missing Debian packages (postgresql, chromium, fonts-noto-cjk)"
	@echo "make clean      remove caches, build/ and test artifacts; distclean also removes .venv"

# --- virtual environment ---------------------------------------------------------------------
# The venv is created once; the project is (re)installed whenever pyproject.toml is newer than
# the stamp. A dev install also satisfies the plain one.

$(BIN)/python:
	@scripts/install-system-deps.sh venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		f"wellpanel needs Python >= 3.11, {sys.executable} is {sys.version.split()[0]}; " \
		"try make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv --clear $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	@echo "installing wellpanel into $(VENV)"
	@$(BIN)/pip install -qq -e .
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	@echo "installing wellpanel[dev] into $(VENV)"
	@$(BIN)/pip install -qq -e '.[dev]'
	@touch $@ $(VENV)/.stamp-base

venv: $(BIN)/python
install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

# --- system packages (Debian) -----------------------------------------------------------------

system-deps:
	@scripts/install-system-deps.sh postgres browser fonts

pg-install:
	@scripts/install-system-deps.sh postgres

# --- the two commands -------------------------------------------------------------------------

# The consent PDF needs fonts-noto-cjk for Chinese text; without it (and without a way to
# install it) the demo still runs, and a Chinese copy answers with an error naming the package.
demo: $(VENV)/.stamp-base
	@scripts/install-system-deps.sh fonts \
		|| echo "make demo: without fonts-noto-cjk, consent PDFs with Chinese text will fail"
	@mkdir -p $(dir $(DEMO_DB))
	$(BIN)/wellpanel demo --host $(HOST) --port $(PORT) --database $(DEMO_DB) $(DEMO_ARGS)

# ruff runs first; the tests run even when it complains (so one run reports both), and the
# target fails if either failed. pytest's summary line is the last line of output.
test: $(VENV)/.stamp-dev system-deps
	@echo "== ruff check"
	@lint=0; \
	$(BIN)/ruff check --output-format concise . \
		|| { lint=$$?; echo "ruff check failed (see above); running the tests anyway"; }; \
	echo "== pytest"; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS) && exit $$lint

# Installs happen on the real clock (package downloads check certificate dates); only pytest,
# and the servers and browser it starts, run on the moved clock.
AT ?= 2029-06-15
test-at: $(VENV)/.stamp-dev system-deps
	@scripts/install-system-deps.sh faketime
	@echo "== pytest with the clock at $(AT) 12:00 UTC"
	TZ=UTC faketime '$(AT) 12:00:00' $(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# --- the rest ---------------------------------------------------------------------------------

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .

format: $(VENV)/.stamp-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# bench/api.py drives the servers with wrk (a C load generator) and runs them on PostgreSQL.
bench-deps:
	@scripts/install-system-deps.sh postgres wrk

bench: $(VENV)/.stamp-dev bench-deps
	@set -e; for script in $(sort $(wildcard bench/*.py)); do \
		echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf build/ test-artifacts/ bench/out/ .pytest_cache/ .ruff_cache/ .hypothesis/ \
		wellpanel.db wellpanel.db-wal wellpanel.db-shm
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info/
