# Two commands on a fresh machine: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
REDIS_PORT := 6379

.PHONY: run test lint typecheck unit redis browser clean help loadtest

help:
	@echo "make run   - set up, build the demo bundle if missing, serve /v1/recall on :8000"
	@echo "make test  - set up, start Redis if needed, lint, type-check and run the tests"
	@echo "make loadtest - locust mix for LOADTEST_TIME (60s) against LOADTEST_HOST, or a local demo"

# The editable install re-runs whenever pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

run: $(INSTALLED)
	$(BIN)/nsprecall demo

# Integration tests talk to a real Redis on 127.0.0.1:$(REDIS_PORT); start (or install) one.
redis:
	@if ! (exec 3<>/dev/tcp/127.0.0.1/$(REDIS_PORT)) 2>/dev/null; then \
		if ! command -v redis-server >/dev/null; then \
			echo "installing redis-server with apt-get"; \
			SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; \
		fi; \
		redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no; \
		for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$(REDIS_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	fi

# The console's browser test drives Debian's chromium through its chromedriver (no browser
# download of selenium's own); install both when either is missing.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing chromium and chromium-driver with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED) redis browser
	$(BIN)/pytest -q

test: lint typecheck unit

# Headless locust run, bounded; CSV stats under var/loadtest/ (loadtest/run.py).
loadtest: $(INSTALLED)
	$(BIN)/python loadtest/run.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
