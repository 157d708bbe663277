# make run  — the portal with its embedded defaults (SQLite, on-disk broker, local Airflow, demo data)
# make test — the whole suite on PostgreSQL + Redis + a real Airflow + headless Chromium
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
RUN_ENV := DEBUG=1 PORTAL_AIRFLOW_USERNAME=portal PORTAL_AIRFLOW_PASSWORD=portal

.PHONY: run test unit bench-codegen bench-health bench-backfill lint services airflow-venv chromium install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f .venv/.installed-* && touch $(STAMP)

install: $(STAMP)

airflow-venv: $(STAMP)
	$(PY) -m orchestrator.local ensure-venv

run: install airflow-venv
	mkdir -p .data/broker/queue .data/broker/processed
	$(RUN_ENV) $(PY) manage.py migrate --no-input
	$(RUN_ENV) $(PY) manage.py seed_demo
	$(RUN_ENV) .venv/bin/honcho start -f Procfile

services:
	bash scripts/services.sh

chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install airflow-venv services chromium
	.venv/bin/lint-imports
	.venv/bin/pytest

unit: install
	.venv/bin/pytest -m "not integration"

lint: install
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench-codegen: install airflow-venv
	$(PY) bench/codegen.py

bench-health: install services
	$(PY) bench/health.py

bench-backfill: install services airflow-venv
	$(PY) bench/backfill.py
