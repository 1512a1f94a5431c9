# The one command surface. `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .local/tools
# MiniStack pins botocore exactly and SAM CLI pins its own ranges: each gets its own virtual environment.
MINISTACK_VERSION := 1.5.33
SAM_CLI_VERSION := 1.170.0
UV_VERSION := 0.13.9
SAM := $(TOOLS)/sam/bin/sam
MINISTACK := $(TOOLS)/ministack/bin/ministack
UV := $(TOOLS)/uv/bin/uv
export SAM_CLI_TELEMETRY := 0

.PHONY: run demo logs test test-unit test-integration test-e2e chaos bench lint format validate build openapi check clean lock client-wheel

# The pinned set from requirements/dev.lock (`make lock`), then this repository's two distributions on top of it:
# the client (clients/python) and aitasks (the runtime in layers/common, the tooling in cli/), editable.
$(BIN)/aitasks: pyproject.toml clients/python/pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e clients/python -e .
	$(BIN)/pip check
	touch $@

# uv compiles the lock; like SAM CLI and MiniStack it has a virtual environment of its own, pinned here.
$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet 'uv==$(UV_VERSION)'

## lock: requirements/dev.lock again from pyproject.toml's dev extra (Python 3.11), newest versions the ranges allow
lock: $(UV)
	$(UV) pip compile requirements/dev.in --output-file requirements/dev.lock --python-version 3.11 --upgrade \
		--no-emit-package aitasks --no-emit-package aitasks-client --custom-compile-command 'make lock' --quiet

$(MINISTACK):
	$(PYTHON) -m venv $(TOOLS)/ministack
	$(TOOLS)/ministack/bin/pip install --quiet 'ministack[full]==$(MINISTACK_VERSION)'

$(SAM):
	$(PYTHON) -m venv $(TOOLS)/sam
	$(TOOLS)/sam/bin/pip install --quiet 'aws-sam-cli==$(SAM_CLI_VERSION)'

tools: $(BIN)/aitasks $(MINISTACK) $(SAM)

## run: the whole stack on this machine (embedded PostgreSQL or DATABASE_URL, MiniStack, sam build + deploy)
run: tools
	$(BIN)/aitasks local up

## demo: with `make run` up in another shell, tasks of every kind (scheduled, retried, failed, cancelled) to their end
demo: $(BIN)/aitasks
	$(BIN)/aitasks demo

## logs: the local functions' logs as they come, one line per record (F=<function> for one of them)
logs: $(BIN)/aitasks
	$(BIN)/aitasks local logs --follow $(if $(F),--function $(F))

## test: unit, integration (real PostgreSQL, moto) and end-to-end (the local stack over HTTP)
test: tools
	$(BIN)/pytest

test-unit: $(BIN)/aitasks
	$(BIN)/pytest tests/unit

test-integration: $(BIN)/aitasks
	$(BIN)/pytest tests/integration

test-e2e: tools
	$(BIN)/pytest tests/e2e

## chaos: every fault scenario against the local stack (a running one, else it starts one): executors killed,
## PostgreSQL paused and restarted, the work queue purged, wake-ups delivered five times, a catastrophic regex.
## About 8 minutes; `make test` runs the quick ones. Figures go to .local/chaos.jsonl.
chaos: tools
	CHAOS=full $(BIN)/pytest tests/chaos -v -s -p no:cacheprovider

## bench: each scenario against its baseline, in one run; writes docs/benchmarks.md and bench/results.json
## (about ten minutes; not part of `make test` or `make check`)
bench: tools
	$(BIN)/python -m bench

lint: $(BIN)/aitasks lint-openapi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Spectral (npm), pinned, in a folder of its own per version: `spectral:oas` (.spectral.yaml) at zero warnings.
SPECTRAL_VERSION := 6.16.3
SPECTRAL := $(TOOLS)/spectral-$(SPECTRAL_VERSION)/node_modules/.bin/spectral

$(SPECTRAL):
	@command -v npm >/dev/null || { echo "lint-openapi needs Node.js 18+ and npm (apt-get install nodejs npm)" >&2; exit 1; }
	npm install --prefix $(TOOLS)/spectral-$(SPECTRAL_VERSION) --no-audit --no-fund --loglevel=error \
		'@stoplight/spectral-cli@$(SPECTRAL_VERSION)'

.PHONY: lint-openapi
## lint-openapi: the OpenAPI document against Spectral's standard ruleset; any warning fails
lint-openapi: $(SPECTRAL)
	$(SPECTRAL) lint --fail-severity=warn docs/openapi.json

format: $(BIN)/aitasks
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

validate: $(SAM)
	$(SAM) validate --lint

build: $(SAM)
	$(SAM) build --parameter-overrides Architecture=$$(uname -m | sed -e 's/aarch64/arm64/')

## openapi: regenerate docs/openapi.json (and the copy the query_tasks function serves) from the routes
openapi: $(BIN)/aitasks
	$(BIN)/aitasks openapi

## client-wheel: the client's wheel, installed alone into a fresh virtual environment, answers a scripted call
client-wheel:
	rm -rf .local/client-wheel && mkdir -p .local/client-wheel
	$(PYTHON) -m venv .local/client-wheel/venv
	.local/client-wheel/venv/bin/pip wheel --quiet --no-deps --wheel-dir .local/client-wheel clients/python
	.local/client-wheel/venv/bin/pip install --quiet .local/client-wheel/aitasks_client-*.whl
	cd .local/client-wheel && venv/bin/python ../../clients/python/smoke.py

## check: everything CI runs
check: lint validate test client-wheel

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
