# sentiflow — the two set-up commands are `make run` and `make test`; each creates .venv on first use.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements/project.lock.txt
UV_PIN := requirements/uv.txt
BUILD  := requirements/build-constraints.txt

.PHONY: run test test-fast lint format benchmarks clean venv lock

venv: $(STAMP)

## The venv holds exactly the lock (every file's sha256 checked): uv, hash-pinned, is pip-installed first; it syncs
## the lock (torch is the CPU wheel from /opt/wheels; the sdist-only packages build with the hash-pinned setuptools of
## $(BUILD)), then installs the project itself, editable, without deps. Re-run whenever pyproject.toml or a lock changes.
$(STAMP): pyproject.toml $(LOCK) $(UV_PIN) $(BUILD)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(UV_PIN)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --build-constraints $(BUILD) $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## Regenerate the lock files from pyproject.toml and requirements/model.in (needs PyPI): scripts/lock.py.
lock: $(STAMP)
	$(BIN)/python scripts/lock.py $(ARGS)

## The main job: the full pipeline on the local backend (data source: SENTIFLOW_DATA_URL). A Prefect server with
## its UI is started first (or reused) so the run can be watched; if that fails the run uses a temporary server.
run: $(STAMP)
	-$(BIN)/sentiflow prefect server
	$(BIN)/sentiflow run $(ARGS)

## The whole test suite, with the services it needs (Prefect server, moto server) started and stopped.
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/run-tests.sh $(ARGS)

## Unit tests only (no end-to-end tests).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py

clean:
	rm -rf .sentiflow .pytest_cache .ruff_cache
