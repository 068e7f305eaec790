# Chimera: every target creates .venv when it is missing, so a fresh clone needs nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# PREFECT_HOME is left alone so Prefect profiles (PREFECT_API_URL) apply; chimera's own local
# server keeps its SQLite database under chimera-data/prefect by itself.

.PHONY: demo test lint typecheck pytest bench clean server docs browser

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

# Tests never touch a real Prefect home: tests/conftest.py makes a temporary one per run and
# removes it at exit (the real-server test starts and stops its own server on a free port).
pytest: $(STAMP) browser
	env -u PREFECT_API_URL $(BIN)/python -m pytest

test: lint typecheck pytest

# The data dictionary is generated from the Pandera contracts; a test fails when it is stale.
docs: $(STAMP)
	$(BIN)/chimera tables --markdown docs/data-dictionary.md

# Headless Chromium for the report browser tests (Debian's package; playwright never downloads
# a browser). Installs only when missing and when root; otherwise those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the report browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	    || echo "could not install chromium: the browser tests will skip"; \
	else echo "chromium missing and not root: the browser tests will skip (apt-get install chromium)"; fi

# BENCH_ARGS=--quick for a small cohort; --profile FILE adds a pyinstrument profile.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

server: $(STAMP)
	$(BIN)/chimera server

clean:
	rm -rf $(VENV) chimera-data .mypy_cache .ruff_cache .pytest_cache
