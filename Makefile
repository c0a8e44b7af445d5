# Two quick-start commands on a fresh machine: `make demo` and `make test`.
# Each one installs what it needs (venv, Python deps, Kafka, PostgreSQL + TimescaleDB).
SHELL := /bin/bash
VENV ?= .venv
RTM := $(VENV)/bin/rtm
PYTEST_ARGS ?=

.PHONY: help install up down status demo test unit lint bench
help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml streams/http/web/package-lock.json
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/python -m streams.http.webassets  # npm ci of the dashboard's libraries, into the cache
	touch $@

install: $(VENV)/.installed  ## create the venv and install rtm-stream with test deps

up: install  ## start Kafka + TimescaleDB locally, migrate, create topics (idempotent)
	$(RTM) up

down: install  ## stop the demo's gateway and worker and the local services
	$(RTM) down

status: install  ## is each service running, and where
	$(RTM) status

demo: up  ## the main job end to end; leaves the dashboard running (make down stops it)
	$(RTM) demo

unit: install  ## fast unit tests only (no services)
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

lint: install  ## the CI gates: ruff check, ruff format --check, mypy --strict, import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: up  ## the whole suite: unit + integration against the real services
	$(VENV)/bin/pytest -q -rs --durations=15 tests $(PYTEST_ARGS)

bench: up  ## rtm bench (prints a table)
	$(RTM) bench
