# Every target installs what it needs first, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
UV     := $(VENV)/bin/uv
UV_VERSION ?= 0.13.9

.PHONY: install lock demo test lint format bench bench-stats bench-decisions bench-router bench-interrupts bench-load clean browser-deps \
	integration-deps

# The versions come from uv.lock (committed): every fresh machine installs the same ones. uv itself is
# bootstrapped into the venv with pip; --inexact keeps it (and pip) installed beside the locked packages.
$(STAMP): pyproject.toml uv.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'uv==$(UV_VERSION)'
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --inexact --extra dev --quiet
	touch $(STAMP)

install: $(STAMP)

# After a change to the dependencies in pyproject.toml: `make lock` and commit uv.lock.
lock:
	test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet 'uv==$(UV_VERSION)')
	$(UV) lock

demo: install
	$(VENV)/bin/stagegate demo

test: install browser-deps integration-deps
	$(PY) -m pytest -q -n 2 --dist loadfile  # both cores; a file's tests stay on one worker (module fixtures)

# The browser tests drive Debian's chromium through Playwright's executable path (no browser download).
browser-deps:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The Prometheus adapter's tests run Debian's prometheus server (tests/integrations/test_prometheus.py).
integration-deps:
	test -x /usr/bin/prometheus || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: bench-stats bench-decisions

bench-stats: install
	$(PY) benchmarks/sequential.py

bench-decisions: install
	$(PY) benchmarks/decisions.py

# How often a Ctrl-C in the middle of MLflow writes leaves the store locked (stagegate/rollback.py).
bench-interrupts: install
	$(PY) benchmarks/interrupt_locks.py

# 10 promotions of 10 models at once on one Prefect server and worker (minutes; PostgreSQL on 127.0.0.1).
bench-load: install
	$(PY) benchmarks/load.py --n 10 --json test-output/bench/load.json

# The router at 200 requests/s for 60 s with shadow on, against the model called directly (docs/router.md).
bench-router: install
	$(PY) benchmarks/router.py

clean:
	rm -rf .stagegate .pytest_cache
