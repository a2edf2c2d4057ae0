# Two set-up commands do everything on a fresh machine with Python 3.11 and make:
#   make sandbox   run Quorum with embedded PostgreSQL, in-process Redis and a Telegram emulator
#   make test      run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox test test-unit test-integration test-e2e lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

sandbox: $(STAMP)
	$(BIN)/quorum sandbox

# Two pytest-xdist workers: the suite mostly waits (on PostgreSQL, the emulator, subprocesses),
# so two run side by side on two cores. `make test XDIST=` runs it in one process.
XDIST ?= -n 2 --dist worksteal

test: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider $(XDIST) $(PYTEST_ARGS)

# Pure logic only, no PostgreSQL, Redis or network (tests/unit/conftest.py enforces it): seconds.
test-unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy quorum bot handlers storage migrations sandbox tests bench
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.outbox_storm
	$(BIN)/python -m bench.votes
	$(BIN)/python -m bench.alerts
	$(BIN)/python -m bench.storm
	$(BIN)/python -m bench.audit

# A running embedded PostgreSQL is stopped first: deleting its data under it would leave an
# orphan server (and a stale socket) behind.
clean:
	if [ -x $(BIN)/quorum ] && [ -f .quorum/pgdata/postmaster.pid ]; then \
		QUORUM_DATA_DIR=.quorum $(BIN)/quorum stop-embedded; fi
	rm -rf $(VENV) .quorum .mypy_cache .ruff_cache .import_linter_cache
