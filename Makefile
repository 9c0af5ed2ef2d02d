# The two commands: `make run` (set up, then serve the demo) and `make test` (set up, then the suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian/Ubuntu packages the project needs; installed with apt when missing (as root).
SYSTEM_PACKAGES := postgresql postgresql-postgis gdal-bin

.PHONY: setup sysdeps run test lint typecheck pytest bench-ingest db-stop clean

setup: sysdeps $(STAMP)

sysdeps:
	@need=""; \
	command -v $(PYTHON) >/dev/null || need="$$need python3"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	command -v ogr2ogr >/dev/null || need="$$need gdal-bin"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need="$$need postgresql-postgis"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$need"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$need >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$need; }; \
	  else \
	    echo "missing system packages:$$need -- install them with: sudo apt-get install$$need"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/gis-ioc serve --demo-if-empty

lint: setup
	$(BIN)/ruff check gis_ioc tests
	$(BIN)/gis-ioc layers validate

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

test: lint typecheck pytest

bench-ingest: setup
	$(BIN)/gis-ioc bench ingest

db-stop:
	-$(BIN)/gis-ioc db stop

clean: db-stop
	rm -rf $(VENV) .gis-ioc .pytest_cache .mypy_cache .ruff_cache
