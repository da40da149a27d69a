# fortranspire: `make run` sets everything up and serves; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export FORTRANSPIRE_HOME ?= $(CURDIR)/.fortranspire

.PHONY: install system-deps run test lint format bench clean demo manifest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,gpu]'
	touch $@

install: system-deps $(VENV)/.installed

# gfortran compiles the original kernels for verification; cpp preprocesses .F/.F90; bwrap
# (bubblewrap) sandboxes both, and every run of generated code.
system-deps:
	@if ! command -v gfortran >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing gfortran with apt-get..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gfortran >/dev/null; \
	  else \
	    echo "fortranspire needs gfortran to verify ports. Install it, e.g. 'sudo apt-get install gfortran'."; \
	    exit 1; \
	  fi; \
	fi
	@# bubblewrap is the sandbox every compile and run of untrusted code goes through; without it
	@# nothing untrusted runs (kernels come back failed), so it is required like gfortran.
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing bubblewrap with apt-get..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "fortranspire needs bubblewrap (bwrap) to sandbox untrusted code. Install it, e.g. 'sudo apt-get install bubblewrap'."; \
	    exit 1; \
	  fi; \
	fi
	@# Chromium drives the dashboard's browser test (tests/web/test_dashboard_browser.py); without
	@# it that test skips, so a failed install only warns.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing chromium with apt-get (for the dashboard browser test)..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the dashboard browser test will skip."; \
	  else \
	    echo "note: chromium is not installed; the dashboard browser test will skip ('sudo apt-get install chromium')."; \
	  fi; \
	fi

HOST ?= 127.0.0.1
PORT ?= 8000

# Idempotent: migrate_schemas, demo tenant on demo.localhost, a demo key printed only once; then
# uvicorn. Embedded PostgreSQL under $(FORTRANSPIRE_HOME) unless DATABASE_URL is set.
run: install
	$(PY) -m fortranspire_site.cli bootstrap-demo
	$(PY) -m fortranspire_site.cli serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# A scripted Le Chat session: starts a server on a throw-away database (demo/.home), connects
# with the mcp SDK client over OAuth 2.1, ports and profiles the CPML kernel, writes
# demo/transcript.md and demo/roofline.png.
demo: install
	$(PY) -m mcp_bridge.demo --port $(or $(DEMO_PORT),8765)

# Regenerates integration/le-chat-connector.json from the live tool registry.
manifest: install
	$(PY) -m mcp_bridge.manifest

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
