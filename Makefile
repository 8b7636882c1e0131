# Two commands: `make run` (set up everything, serve the dashboard, run a task worker) and `make test`.
# Production: `make serve-prod` (gunicorn and WORKERS task workers from the environment; see docs/deploy.md).
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
# The first Python >= 3.12 found (pyenv's included).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; break; fi; done)
# Every process of `make run` (dashboard and worker) counts into this directory, emptied of its files at each start,
# so /metrics reports them all (see patchworks_site/metrics.py).
PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/.prometheus-multiproc
DEV_ENV := DEBUG=1 PORT=$(PORT)

.PHONY: run serve-prod test lint install setup benchmark clean

$(BIN)/.installed: requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is needed (none found on PATH)."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

# A development credential key, generated once into an ignored file.
.credential-keys: | $(BIN)/.installed
	$(BIN)/python -c "import base64, secrets; print('dev-1:' + base64.b64encode(secrets.token_bytes(32)).decode())" > $@
	chmod 600 $@

setup: install .credential-keys
	$(DEV_ENV) $(BIN)/python manage.py migrate --no-input
	$(DEV_ENV) $(BIN)/python manage.py load_catalog
	$(DEV_ENV) $(BIN)/python manage.py seed_demo

run: setup
	@echo ""
	@echo "  Patchworks dashboard: http://127.0.0.1:$(PORT)/"
	@echo "  Log in as demo / demo (Administrator of Acme Retail)."
	@echo ""
	@# One huey worker beside runserver (queue: huey.sqlite3 beside the database), stopped with it.
	@mkdir -p "$(PROMETHEUS_MULTIPROC_DIR)" && rm -f "$(PROMETHEUS_MULTIPROC_DIR)"/*.db
	@export PROMETHEUS_MULTIPROC_DIR="$(PROMETHEUS_MULTIPROC_DIR)"; \
	$(DEV_ENV) $(BIN)/python manage.py run_huey & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(DEV_ENV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# Refuses to start on SQLite, without Redis or without its keys, and says what to set.
serve-prod: install
	$(BIN)/python -m patchworks_site.serve_prod $(SERVE_PROD_ARGS)

# The suite runs in parallel (pytest-xdist): most tests wait on worker processes, local HTTP servers or
# Chromium, so more processes than cores pay off; worksteal evens out the long tests at the end.
# One file serially: make test PYTEST_WORKERS=0 PYTEST_ARGS=tests/test_x.py
PYTEST_WORKERS ?= 4
test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

benchmark: install
	$(BIN)/python -m benchmarks.manage_connectors

clean:
	rm -rf $(VENV) db.sqlite3 huey.sqlite3 staticfiles .pytest_cache .prometheus-multiproc .test-limits*.sqlite3*
