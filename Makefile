# chargebus: `make run` starts the demo (the service with its embedded broker, mosquitto, and
# simulated wallboxes), `make serve` the service alone, `make test` runs lint, type checks and all tests.
# Needs only python3 and make; the rest is installed into .venv, and mosquitto (and for the
# tests its clients and jq) with apt when missing (scripts/ensure-mosquitto.sh).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Written after a successful install; pip runs again only when pyproject.toml changes.
STAMP := $(VENV)/.installed
EXTRAS := embedded,dev

ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv run serve test lint typecheck bench screenshot clean distclean

help:
	@echo "make run        the demo: chargebus, its mosquitto, two simulated Power Brains"
	@echo "                and a grid meter, already configured (make run ARGS='...')"
	@echo "make serve      chargebus alone, for your own devices (make serve ARGS='...')"
	@echo "make test       install what is missing, then ruff, mypy and pytest (PYTEST_ARGS='...')"
	@echo "make lint       ruff check"
	@echo "make typecheck  mypy --strict (configured in pyproject.toml)"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make screenshot docs/dashboard.png, taken by the dashboard's browser test"
	@echo "make venv       create .venv and install chargebus[$(EXTRAS)] into it"
	@echo "make clean      remove caches and build output; make distclean also removes .venv"

venv: $(STAMP)

# A failed `python3 -m venv` (Debian without python3-venv) leaves a .venv without pip, so the
# check is for a working pip, and a broken .venv is made anew.
$(BIN)/python:
	@if ! $(PYTHON) -m venv --clear $(VENV); then \
		rm -rf $(VENV); \
		echo "make: '$(PYTHON) -m venv' failed: ensurepip/venv is missing (on Debian: python3-venv)." >&2; \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing python3-venv with apt-get" >&2; \
			DEBIAN_FRONTEND=noninteractive apt-get -q update; \
			DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends python3-venv; \
			$(PYTHON) -m venv --clear $(VENV) || { rm -rf $(VENV); exit 1; }; \
		else \
			echo "make: install it (as root: apt-get install python3-venv), then run make again." >&2; \
			exit 1; \
		fi; \
	fi

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { \
		echo "make: $(VENV) has no pip: run 'make distclean' and install python3-venv" >&2; \
		exit 1; }
	@echo "make: installing chargebus[$(EXTRAS)] into $(VENV)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[$(EXTRAS)]'
	@touch $@

# Without a broker URL chargebus starts mosquitto as its embedded broker; where it cannot be
# installed (no root, no sudo), chargebus still starts, with amqtt and a warning.
run: $(STAMP)
	@bash scripts/ensure-mosquitto.sh || echo "make: mosquitto could not be installed;" \
		"chargebus falls back to amqtt (see its warning)" >&2
	$(BIN)/chargebus demo $(ARGS)

serve: $(STAMP)
	@bash scripts/ensure-mosquitto.sh || echo "make: mosquitto could not be installed;" \
		"chargebus falls back to amqtt (see its warning)" >&2
	$(BIN)/chargebus run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest's exit code 5 means no test was collected: that is a failure here, not a pass.
test: $(STAMP)
	@bash scripts/ensure-mosquitto.sh
	@bash scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	@echo "$(BIN)/python -m pytest $(PYTEST_ARGS)"
	@status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: $(STAMP)
	@shopt -s nullglob; \
	tests=(bench/test_*.py bench/*_test.py); \
	if [ $${#tests[@]} -gt 0 ]; then \
		echo "$(BIN)/python -m pytest bench --benchmark-only"; \
		$(BIN)/python -m pytest bench --benchmark-only; \
	else \
		scripts=(); \
		for f in bench/*.py; do \
			case "$$(basename "$$f")" in __init__.py|conftest.py) ;; *) scripts+=("$$f") ;; esac; \
		done; \
		if [ $${#scripts[@]} -eq 0 ]; then echo "make: no benchmarks in bench/"; fi; \
		for f in $${scripts[@]+"$${scripts[@]}"}; do \
			echo "$(BIN)/python $$f"; $(BIN)/python "$$f"; \
		done; \
	fi

# The README's picture of the dashboard: the browser test's screenshot of the demo.
screenshot: $(STAMP)
	@bash scripts/ensure-mosquitto.sh
	@bash scripts/ensure-chromium.sh
	CHARGEBUS_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/python -m pytest -q \
		tests/integration/test_dashboard_browser.py -k demo_appears

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
