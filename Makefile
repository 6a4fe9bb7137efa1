# Quick start: `make run` starts the product, `make test` runs the whole suite.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps run cluster test lint typecheck check bench clean

setup:
	@bash scripts/bootstrap.sh

system-deps:
	@bash scripts/system-deps.sh

run: setup
	$(BIN)/captions serve

# Redis, PostgreSQL, two asr-serve, two nodes and HAProxy on loopback; Ctrl-C stops all.
cluster: setup system-deps
	$(BIN)/python deploy/cluster.py

test: setup system-deps
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check common captions sfu meeting cli evaluation tests
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
