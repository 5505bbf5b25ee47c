# Every target creates .venv when missing and installs probgen into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The one place torch is chosen: plain `torch` from your index by default. CI (.ci/run) and
# CPU-only machines pin the CPU build explicitly, e.g. `make test TORCH="torch==2.13.0"` (with a
# CPU wheel index or find-links in pip's configuration), to avoid a multi-GB CUDA download.
TORCH  ?= torch

.PHONY: install demo test test-all bench lint docs examples clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev,docs]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/probgen demo --out runs/demo

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

examples: install
	$(BIN)/python -m pytest tests/test_examples.py

bench: install
	@for script in benchmarks/[a-z]*.py; do case $$script in *report.py) continue;; esac; echo "== $$script"; $(BIN)/python -m benchmarks.$$(basename $$script .py) || exit 1; done
	$(BIN)/python -m benchmarks.report

lint: install
	$(BIN)/ruff check probgen tests benchmarks examples

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site runs .pytest_cache
