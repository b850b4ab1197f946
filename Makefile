# The few commands a newcomer needs. Everything runs in a local virtualenv (.venv) made on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_HOME ?= .demo

.PHONY: install demo test lint bench screenshots clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lab]'
	touch $@

install: $(VENV)/.installed

## demo: the main job on embedded defaults (SQLite in $(DEMO_HOME)), on benign generated data, then
## the web app until Ctrl-C (DEMO_ARGS=--port=8471 for another port)
demo: install
	$(VENV)/bin/peerwatch --home $(DEMO_HOME) demo $(DEMO_ARGS)

## test: the whole test suite (PostgreSQL half skips locally with a reason when no server; never in CI)
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: treated as a failure" >&2; fi; \
	exit $$status

## lint: ruff (lint + format check) and mypy --strict
lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

## bench: the speed and memory benchmarks; they rewrite docs/benchmarks.md
bench: install
	$(PY) benchmarks/bench_index.py
	$(PY) benchmarks/bench_evidence.py
	$(PY) benchmarks/bench_import.py
	$(PY) benchmarks/bench_bittorrent.py
	$(PY) benchmarks/bench_leads.py
	$(PY) benchmarks/bench_ed2k.py

## screenshots: rewrite docs/screenshots/*.png (a demo home on 127.0.14.x, Debian's chromium)
screenshots: install
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache
