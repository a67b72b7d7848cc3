# ClearPath Realtime: `make run` sets up and runs the embedded system, `make test` sets up and runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system python node proto proto-check lint test run bench clean

setup: system python node

# Debian packages the tests drive for real: redis-server and headless Chromium.
system:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json $(wildcard clients/web/package.json)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto: python
	$(BIN)/python scripts/gen_protos.py

proto-check: python node
	$(BIN)/python scripts/gen_protos.py --check
	npx buf lint

lint: python
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup proto-check lint
	$(BIN)/pytest

run: setup
	$(BIN)/clearpath serve --simulate

clean:
	rm -rf $(VENV) node_modules clients/web/dist .pytest_cache .mypy_cache .ruff_cache
