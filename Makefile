# collapsewatch: `make run` (server + demo) and `make test` set up everything they need.
PYTHON ?= python3
VENV ?= .venv
# torch's build. On Linux the public index's default wheel is the multi-GB CUDA build; the CPU
# build comes from PyTorch's CPU index:
#   make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# and a CUDA build from its CUDA index (e.g. .../whl/cu126). Changing TORCH reinstalls torch.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_FLAGS ?= --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help run test fuzz lint format bench load validate browser clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip

# torch first, pinned, so nothing later pulls a CUDA build from the registry. The stamp holds
# the TORCH spec installed: another TORCH (`make run TORCH=...`) installs it, even in an
# existing .venv, and the build in use is printed.
TORCH_STAMP := $(VENV)/.torch-spec
.PHONY: FORCE
FORCE:
$(TORCH_STAMP): FORCE | $(BIN)/python
	@if [ "$$(cat $@ 2>/dev/null)" != "$(TORCH)" ]; then \
	  echo "collapsewatch: installing $(TORCH)"; \
	  $(PIP) install $(PIP_FLAGS) $(TORCH) && echo "$(TORCH)" > $@; \
	else echo "collapsewatch: torch build: $(TORCH) (TORCH=... picks another)"; fi

$(VENV)/.demo-installed: pyproject.toml $(TORCH_STAMP) | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(TORCH_STAMP) | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	touch $@

run: $(VENV)/.demo-installed ## set up, start the server on SQLite and stream a demo training into it
	$(BIN)/collapsewatch demo

# Test processes (pytest-xdist); TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed browser ## set up and run the tests (SQLite, Postgres, browser)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

FUZZ_EXAMPLES ?= 50
fuzz: $(VENV)/.dev-installed ## schemathesis over every API operation, more examples than `make test`
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q --timeout=0 tests/server/test_openapi_fuzz.py

browser: ## install Debian's chromium for the browser tests when it is missing and we are root
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: browser tests will skip (fail under CI)"; \
	  else echo "no /usr/bin/chromium: browser tests will skip (fail under CI)"; fi; \
	fi

lint: $(VENV)/.dev-installed ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev-installed ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make validate VALIDATE_GATE=` fails when the held-out half misses issue 10's bar; until the
# defaults meet it, the suite only reports.
VALIDATE_GATE ?= --report-only
validate: $(VENV)/.dev-installed ## every scenario, then the validation suite alone and beside a busy process
	COLLAPSEWATCH_VALIDATE=1 $(BIN)/python -m pytest tests/e2e/test_scenarios.py -s -q
	$(BIN)/python -m collapsewatch_demo.validation $(VALIDATE_GATE)
	$(BIN)/python -m collapsewatch_demo.validation --busy $(VALIDATE_GATE)

bench: $(VENV)/.dev-installed ## benchmarks that print numbers: SDK overhead, alert latency, delivery, ingest
	$(BIN)/python bench/sdk_overhead.py
	$(BIN)/python bench/alert_latency.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/ingest.py --runs 1 --runs 8
	$(BIN)/python bench/series_read.py --points 200000

LOAD_MINUTES ?= 3
load: $(VENV)/.dev-installed ## 32 trainers on one server (SQLite), then on 2 processes over Postgres
	$(BIN)/python bench/trainers.py --minutes $(LOAD_MINUTES)
	$(BIN)/python bench/trainers.py --minutes $(LOAD_MINUTES) --backend postgres --procs 2

clean: ## remove the virtual environment
	rm -rf $(VENV)
