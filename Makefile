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

# Files kept in `ruff format` style (grow the list as files are reformatted; a repository-wide run would
# collide with work in progress). mypy: strict on dbmazz_connectors/core, lenient elsewhere (pyproject.toml).
FORMATTED := dbmazz_connectors/core/positions.py dbmazz_connectors/sources/postgres/position.py \
	dbmazz_connectors/sources/mysql/position.py tests/connectors/core/test_positions.py

lint: venv
	$(BIN)/ruff check dbmazz_connectors dbmazz_pipelines dbmazz_project infra tests bench
	$(BIN)/ruff format --check $(FORMATTED)
	$(BIN)/mypy

# This repository is a dg project (dbmazz_project/defs): its component pipelines and pipelines.yaml load.
check-defs: venv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dg check defs

clean:
	rm -rf $(VENV) .dbmazz .pytest_cache
