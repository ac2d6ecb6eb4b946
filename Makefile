# Two commands on a fresh machine: `make demo` (the headline experiment) and `make test` (the test suite).
# Each creates .venv and installs the project; torch is pinned to the CPU wheel by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXPERIMENT ?= experiments/he_protection.toml
OUT    ?= results/he_protection
WORKERS ?= 2

.PHONY: install demo test lint clean

$(BIN)/he-leak: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(BIN)/he-leak

demo: install
	$(BIN)/he-leak run $(EXPERIMENT) --out $(OUT) --workers $(WORKERS) --check
	@echo "report: $(OUT)/report.md"

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) results .pytest_cache
