# Entry points for newcomers and CI. `make run` needs only Python 3.11+ on the PATH.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help env run migrate test test-unit test-integration test-e2e fuzz lint check-deploy bench bench-scale soak worker clean

help:
	@echo "make run      start the broker on http://127.0.0.1:8000 (SQLite, dev provider)"
	@echo "make test     lint, then the whole test suite (PostgreSQL + Redis needed, see README)"
	@echo "make lint     ruff, mypy and the import contract"
	@echo "make fuzz     fuzz the API against its OpenAPI document, longer than make test does"
	@echo "make check-deploy  validate Dockerfiles, compose.yaml and Kubernetes manifests (offline)"
	@echo "make migrate  apply database migrations"
	@echo "make bench    benchmark JWKS, discovery and the refresh grant against baselines"
	@echo "make bench-scale  refresh grant, introspection and admin API at 10k-1M sessions (~15 min)"
	@echo "make soak     two brokers and two workers under load while faults are injected (MINUTES=5)"
	@echo "make worker   start a sync-worker (needs BROKER_REDIS_URL)"

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "uv>=0.5"

# --compile-bytecode: the dependencies' .pyc files are written once here, so a process imports
# them in about half the time even where Python writes none (PYTHONDONTWRITEBYTECODE, read-only
# trees); the test suite starts many broker, worker and stand-in processes.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml shared/pyproject.toml services/broker/pyproject.toml services/sync-worker/pyproject.toml verifier/pyproject.toml Makefile
	$(UV) sync --frozen --compile-bytecode --python $(VENV)/bin/python
	@touch $@

env: $(VENV)/.synced

run: env
	BROKER_LOG_FORMAT=$${BROKER_LOG_FORMAT:-console} $(RUN) broker serve --migrate

migrate: env
	$(RUN) broker migrate

worker: env
	$(RUN) sync-worker

lint: env
	$(RUN) ruff check shared services verifier standins migrations tests bench deploy
	$(RUN) ruff format --check shared services verifier standins migrations tests bench deploy
	$(RUN) mypy shared/src services/broker/src services/sync-worker/src verifier/src standins bench deploy
	$(RUN) lint-imports

# Schemas, lint and the broker's own config loader over deploy/, compose.yaml and the
# Dockerfiles: no cluster or Docker engine needed.
check-deploy: env
	$(RUN) python deploy/check.py

test: env lint check-deploy
	$(RUN) pytest -q

test-unit: env
	$(RUN) pytest -q tests/unit

test-integration: env
	$(RUN) pytest -q tests/integration tests/contract

test-e2e: env
	$(RUN) pytest -q tests/e2e

# tests/e2e/test_api_fuzzing.py with BROKER_FUZZ_EXAMPLES (default 500) random examples per
# operation and database; make test runs 10, the same ones each time.
fuzz: env
	BROKER_FUZZ_EXAMPLES=$${BROKER_FUZZ_EXAMPLES:-500} $(RUN) pytest -q --timeout=0 tests/e2e/test_api_fuzzing.py

bench: env
	$(RUN) python -m bench.run

# One throw-away database per size; SCALE_ARGS passes options, e.g. SCALE_ARGS="--sizes 10k,100k
# --audit-rows 1M" for a quicker run.
bench-scale: env
	$(RUN) python -m bench.scale $(SCALE_ARGS)

# Its own PostgreSQL and Redis on free ports (initdb, pg_ctl and redis-server on the PATH);
# SOAK_ARGS passes more options, e.g. SOAK_ARGS="--schedule short" or "--report FILE".
MINUTES ?= 5
soak: env
	$(RUN) python -m bench.soak --minutes $(MINUTES) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
