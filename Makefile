# Chimera: every target creates .venv when it is missing, so a fresh clone needs nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# PREFECT_HOME is left alone so Prefect profiles (PREFECT_API_URL) apply; chimera's own local
# server keeps its SQLite database under chimera-data/prefect by itself.

.PHONY: demo test lint typecheck pytest bench clean server

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 (or python3 >= 3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/chimera demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Tests never touch a real Prefect home: a fresh temporary one per run (tests/flows/conftest.py
# also sets one, and the real-server test starts and stops its own server on a free port).
pytest: $(STAMP)
	env -u PREFECT_API_URL PREFECT_HOME=$$(mktemp -d) $(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

server: $(STAMP)
	$(BIN)/chimera server

clean:
	rm -rf $(VENV) chimera-data .mypy_cache .ruff_cache .pytest_cache
