# hv-emu: every target creates .venv on first use, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test installed lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hv-emu demo

# The installed-wheel user flow runs before the unit tests so that pytest's summary closes the run.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	bash tests/installed/user_flow.sh $(BIN)/python
	$(BIN)/python -m pytest

installed: $(STAMP)
	bash tests/installed/user_flow.sh $(BIN)/python

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
