# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/parcelvault init --exist-ok
	$(BIN)/parcelvault demo
	$(BIN)/parcelvault serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

# Commands are timed as an installed package runs them, from compiled bytecode (an
# editable install under PYTHONDONTWRITEBYTECODE would compile every module at each start).
bench: $(STAMP)
	$(BIN)/python -m compileall -q src
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
