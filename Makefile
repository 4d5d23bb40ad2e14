# fedstrata: `make demo` runs the default federation, `make test` runs the tests.
# Both create .venv/ when it is missing or stale (pyproject.toml or constraints.txt
# changed). The venv gets the exact versions of constraints.txt; the package itself only
# declares compatible ranges (users install it next to their own torch).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

.PHONY: venv demo test check lint format bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.stamp-*
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/fedstrata run --preset quickstart

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

check: lint test

bench-quick: venv
	for b in bench/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
