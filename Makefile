# ClearPath Realtime.
#   make run    set everything up, then run core + bridge + simulator (dashboard: http://localhost:8000)
#   make test   set everything up, then run every check and test (what .ci/run runs)
#   make cluster  redis + two cores + two bridges + nginx + simulator (http://localhost:8000)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-run system python node web proto proto-check proto-breaking lint \
        test test-python test-web test-e2e bench bench-smoke run cluster clean

setup-run: python node web
setup: system setup-run

# Debian packages the tests drive for real: headless Chromium (browser tests),
# redis-server and nginx (scale-out, `make cluster`), nats-server (a bench baseline).
# Installed only when missing.
system:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || missing="$$missing nats-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json clients/web/package.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The dashboard the bridge serves at / (clients/web/dist).
web: node
	npm -w clients/web run build --silent

proto: python
	$(BIN)/python scripts/gen_protos.py

proto-check: python node
	$(BIN)/python scripts/gen_protos.py --check
	npx buf lint

# Wire and source compatibility of protos/ against main (run on a branch).
proto-breaking: node
	npx buf breaking --against '.git#branch=main'

lint: python
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-python: python
	$(BIN)/pytest

test-web: node
	npm -w clients/web run typecheck
	npm -w clients/web test

test-e2e: setup
	npm -w clients/web run e2e

bench-smoke: python
	$(BIN)/python -m bench --quick --require clearpath

test: setup proto-check lint test-python test-web test-e2e bench-smoke

bench: setup-run
	$(BIN)/python -m bench

run: setup-run
	$(BIN)/clearpath serve --simulate

# The local scale-out cluster in the foreground; Ctrl-C stops it. Ports and the state
# folder (.cluster/) are flags or CLEARPATH_CLUSTER_* variables: clearpath cluster --help.
cluster: system setup-run
	$(BIN)/clearpath cluster

clean:
	rm -rf $(VENV) node_modules clients/web/dist .pytest_cache .mypy_cache .ruff_cache
