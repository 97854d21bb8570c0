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
	dbmazz_connectors/sources/mysql/position.py tests/connectors/core/test_positions.py bench/tombstones.py \
	dbmazz_connectors/sinks/starrocks/__init__.py dbmazz_connectors/sinks/starrocks/_body.py \
	dbmazz_connectors/sinks/starrocks/_client.py dbmazz_connectors/sinks/starrocks/_stream_load.py \
	dbmazz_connectors/sinks/starrocks/config.py dbmazz_connectors/sinks/starrocks/types.py dbmazz_connectors/sinks/starrocks/sink.py \
	dbmazz_pipelines/stream.py infra/s3.py tests/connectors/changelog/test_store_s3.py \
	tests/connectors/sinks/conformance/__init__.py tests/connectors/sinks/conformance/_kill.py \
	tests/connectors/sinks/conformance/conftest.py tests/connectors/sinks/conformance/kit.py \
	tests/connectors/sinks/conformance/oot_sink/__init__.py tests/connectors/sinks/conformance/oot_sink/sink.py \
	tests/connectors/sinks/conformance/test_conformance.py tests/connectors/sinks/conformance/test_out_of_tree.py \
	tests/connectors/sinks/starrocks/__init__.py tests/connectors/sinks/starrocks/_read.py \
	tests/connectors/sinks/starrocks/test_config_errors.py tests/connectors/sinks/starrocks/test_crash.py \
	tests/connectors/sinks/starrocks/test_semantics.py tests/connectors/sinks/starrocks/test_standin.py \
	tests/connectors/sinks/starrocks/test_stream_load.py tests/connectors/sinks/starrocks/test_types.py \
	tests/connectors/sinks/starrocks/test_workload.py tests/connectors/sinks/tombstones/__init__.py \
	tests/connectors/sinks/tombstones/_kill_prune.py tests/connectors/sinks/tombstones/_kit.py \
	tests/connectors/sinks/tombstones/test_clickhouse.py tests/connectors/sinks/tombstones/test_retention.py \
	tests/connectors/sinks/tombstones/test_sql.py tests/connectors/sinks/tombstones/test_starrocks.py \
	tests/e2e/_topology.py tests/e2e/test_installed_package.py tests/e2e/test_production_topology.py \
	tests/fixtures/least_privilege.py tests/fixtures/starrocks.py tests/fixtures/starrocks_standin.py \
	tests/pipelines/test_stream.py tests/security/test_least_privilege.py tests/faults/test_stream_faults.py \
	dbmazz_pipelines/freshness.py dbmazz_pipelines/operations.py tests/pipelines/test_freshness_policy.py \
	tests/pipelines/test_operations.py

lint: venv
	$(BIN)/ruff check dbmazz_connectors dbmazz_pipelines dbmazz_project infra tests bench
	$(BIN)/ruff format --check $(FORMATTED)
	$(BIN)/mypy

# This repository is a dg project (dbmazz_project/defs): its component pipelines and pipelines.yaml load.
check-defs: venv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dg check defs

clean:
	rm -rf $(VENV) .dbmazz .pytest_cache
