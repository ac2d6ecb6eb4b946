# Two commands on a fresh machine: `make demo` (the headline experiment) and `make test` (the test suite).
# Each creates .venv and installs the project; torch is pinned to the CPU wheel by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXPERIMENT ?= experiments/he_protection.toml
OUT    ?= results/he_protection
WORKERS ?= 2

FLOWER_VENV ?= .venv-flower

.PHONY: install demo test lint clean flower

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

# The Flower example (experiments/flower_fedavg.py) in its own environment: flwr adds ~275 MB and ~40 s of install
# and pins older rich, protobuf and packaging than the test environment's, so `make test` does not install it.
flower: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet -c constraints.txt -e ".[test,flower]"
	$(FLOWER_VENV)/bin/python -m pytest tests/test_flower.py -s

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(FLOWER_VENV) results .pytest_cache
