# plldb developer commands. On a fresh machine `make test` (or `make demo`) installs everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: all init test lint typecheck unit unit-fast demo bench clean test-aws test-stress

all: test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[localcloud,dev]"
	touch $(STAMP)

# The demo needs plldb and its local cloud only, not the development tools.
$(DEMO_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[localcloud]"
	touch $(DEMO_STAMP)

init: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check plldb tests examples
	$(BIN)/ruff format --check plldb tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile; status=$$?; if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

# The tests not marked slow (no local cloud end to end): seconds, for the edit-test loop.
unit-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

test: lint typecheck unit

# The suite three times in a row beside two CPU-bound processes: it must never flake under load.
test-stress: $(STAMP)
	scripts/test-stress

# The end-to-end scenario against the AWS account of your current credentials (docs/testing.md).
test-aws: $(STAMP)
	PLLDB_TEST_AWS=1 $(BIN)/python -m pytest -q -s -p no:xdist tests/scenarios -k aws

demo: $(DEMO_STAMP)
	$(BIN)/plldb demo

# The whole benchmark (docs/performance.md), the original plldb 0.1.3 side by side, into bench/results/
# with the commit it measured. Quick smoke run: make bench BENCH_ARGS=--quick.
bench: $(STAMP)
	$(BIN)/python -m plldb.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
