# dbmazz — every target bootstraps what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-all demo bench lint check-defs clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py dbmazz_connectors/sources/postgres/_copyrecv.c
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "dbmazz needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The quick suite (what CI runs): every test but the large `slow` workloads.
test: venv
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m infra.demo

bench: venv
	@for script in bench/*.py; do \
		case $$script in bench/_*) continue;; esac; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

# ruff (checks and its formatter, every file) and mypy (strict on core and the sink toolkit: pyproject.toml)
LINTED := dbmazz_connectors dbmazz_pipelines dbmazz_project infra tests bench

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# This repository is a dg project (dbmazz_project/defs): its component pipelines and pipelines.yaml load.
check-defs: venv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dg check defs

clean:
	rm -rf $(VENV) .dbmazz .pytest_cache
