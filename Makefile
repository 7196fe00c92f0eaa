# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/arbiter demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest-xdist workers: 3 keeps 2 cores busy (the integration tests wait on brokers and
# child processes); the first models are built once, outside every test's timeout, and
# cached in .cache/ (tests/first_models.py).
WORKERS ?= 3
PYTEST  := $(BIN)/pytest -n $(WORKERS) --dist loadgroup

test: lint typecheck browser
	$(PYTEST)

# Headless Chromium + chromedriver for tests/test_browser.py, from the Debian packages.
# Needs root (CI runs as root); where apt-get cannot run, it warns and the browser test
# skips, naming what is missing: the rest of `make test` still runs.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  echo "warning: could not install chromium/chromium-driver (need root and apt); the browser tests will be skipped"

unit: $(STAMP)
	$(PYTEST) -m "not kafka and not postgres and not sqlite"

bench: $(STAMP)
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) data .cache .pytest_cache .mypy_cache .ruff_cache
