# Two commands set up a fresh machine: `make serve` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
UV      := $(BIN)/uv
UV_VERSION := 0.13.9
DATA    ?= data
HOST    ?= 127.0.0.1
PORT    ?= 8000
SIZE    ?= small
PYTEST_ARGS ?=

.PHONY: serve test bench bench-tools install install-dev demo clean lock console console-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"

$(VENV)/.runtime-stamp: requirements.lock pyproject.toml | $(BIN)/python
	$(UV) pip sync -q --python $(BIN)/python requirements.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.dev-stamp: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(UV) pip sync -q --python $(BIN)/python requirements-dev.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@ $(VENV)/.runtime-stamp

install: $(VENV)/.runtime-stamp
install-dev: $(VENV)/.dev-stamp

demo: install
	$(BIN)/segops --data $(DATA) demo-data --users 2000 --events 200000 --seed 7 --if-missing

serve: demo
	$(BIN)/segops --data $(DATA) serve --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev bench-tools
	$(BIN)/python -m benchmarks --size $(SIZE)

# bench_membership loads the server with wrk: a C client costs a few microseconds of CPU per request,
# where a Python one would need most of a core for 5,000 req/s and take it from the 2-core server it measures.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "wrk is not installed (bench_membership needs it): apt-get install -y wrk"; \
	    apt-get install -y -q wrk || { echo "apt-get update, then again"; apt-get update -q && apt-get install -y -q wrk; }; \
	  else \
	    echo "wrk is not installed (bench_membership needs it): sudo apt-get install -y wrk, or brew install wrk"; \
	    exit 1; \
	  fi; }

# The web console (console/: Preact + Vite). Its built bundle is committed in api/console_dist/, so serve and
# test need no npm; after changing console/, `make console` rebuilds it (commit the result).
console:
	cd console && npm ci --no-audit --no-fund && npm run build

# Vitest (the definition editor's model), then a check that the committed bundle is what console/ builds.
console-test:
	cd console && npm ci --no-audit --no-fund && npx vitest run
	out=$$(mktemp -d) && (cd console && npx vite build --logLevel warn --outDir $$out --emptyOutDir) \
	  && diff -r $$out api/console_dist && rm -rf $$out || { echo "api/console_dist is stale: make console"; exit 1; }

# Re-resolve the pins (needs uv on PATH); commit both lock files.
lock:
	uv pip compile pyproject.toml -o requirements.lock --python-version 3.11 -q
	uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11 -q

clean:
	rm -rf $(VENV) .pytest_cache
