# The two commands: `make run` (set up, then serve the demo) and `make test` (set up, then the suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian/Ubuntu packages the project needs; installed with apt when missing (as root); pgRouting for the
# newest PostgreSQL installed (postgresql-NN-pgrouting) after them.
SYSTEM_PACKAGES := postgresql postgresql-postgis gdal-bin chromium python3-qgis qgis-providers npm fonts-dejavu-core
# Browser libraries kept in gis_ioc/static/vendor (the views make no request outside the server).
LEAFLET := leaflet@1.9.4
VECTORGRID := leaflet.vectorgrid@1.3.0
SWAGGER_UI := swagger-ui-dist@5.35.0
# MapLibre GL JS, for the tests that draw our styles in Chromium as a web developer's page would (not shipped).
MAPLIBRE := maplibre-gl@6.17.0
NPM_STAMP := build/npm/.installed-$(MAPLIBRE)

.PHONY: setup sysdeps run test lint typecheck pytest bench-ingest bench-tiles db-stop clean vendor

setup: sysdeps $(STAMP) $(NPM_STAMP)

sysdeps:
	@need=""; \
	command -v $(PYTHON) >/dev/null || need="$$need python3"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	command -v ogr2ogr >/dev/null || need="$$need gdal-bin"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need="$$need postgresql-postgis"; \
	test -x /usr/bin/chromium || need="$$need chromium"; \
	command -v npm >/dev/null || need="$$need npm"; \
	test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || need="$$need fonts-dejavu-core"; \
	test -d /usr/lib/python3/dist-packages/qgis/core || need="$$need python3-qgis"; \
	ls /usr/lib/qgis/plugins/libprovider_wfs.so >/dev/null 2>&1 || need="$$need qgis-providers"; \
	command -v wrk >/dev/null || need="$$need wrk"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || need="$$need nginx-light"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$need"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$need >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$need; }; \
	  else \
	    echo "missing system packages:$$need -- install them with: sudo apt-get install$$need"; exit 1; \
	  fi; \
	fi; \
	pg=$$(ls /usr/lib/postgresql | sort -n | tail -1); \
	if [ ! -f /usr/share/postgresql/$$pg/extension/pgrouting.control ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages: postgresql-$$pg-pgrouting"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q postgresql-$$pg-pgrouting >/dev/null || { apt-get update -q >/dev/null && \
	      apt-get install -y -q postgresql-$$pg-pgrouting; }; \
	  else \
	    echo "missing system package: postgresql-$$pg-pgrouting -- install it with: sudo apt-get install \
	postgresql-$$pg-pgrouting"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(NPM_STAMP):
	mkdir -p build/npm
	npm install --silent --no-audit --no-fund --prefix build/npm $(MAPLIBRE)
	touch $@

run: setup
	@echo "gis-ioc: the wall will be at http://$${GIS_IOC_HOST:-127.0.0.1}:$${GIS_IOC_PORT:-8000}/views/wall"
	$(BIN)/gis-ioc serve --demo-if-empty --open-wall

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

bench-tiles: setup
	$(BIN)/gis-ioc bench tiles

# Refresh the vendored browser libraries from the npm registry (needs npm; not part of setup).
vendor:
	rm -rf build/vendor && mkdir -p build/vendor && cd build/vendor && npm pack -q $(LEAFLET) $(VECTORGRID) $(SWAGGER_UI) \
	  && for f in *.tgz; do mkdir -p $${f%.tgz} && tar xzf $$f -C $${f%.tgz}; done
	cp build/vendor/leaflet-1.9.4/package/dist/leaflet.js build/vendor/leaflet-1.9.4/package/dist/leaflet.css \
	  build/vendor/leaflet-1.9.4/package/LICENSE gis_ioc/static/vendor/leaflet-1.9.4/
	cp build/vendor/leaflet-1.9.4/package/dist/images/* gis_ioc/static/vendor/leaflet-1.9.4/images/
	sed -i '/sourceMappingURL/d' gis_ioc/static/vendor/leaflet-1.9.4/leaflet.js
	cp build/vendor/leaflet.vectorgrid-1.3.0/package/dist/Leaflet.VectorGrid.bundled.min.js \
	  gis_ioc/static/vendor/leaflet.vectorgrid-1.3.0/
	cd build/vendor/swagger-ui-dist-5.35.0/package && cp swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE \
	  NOTICE ../../../../gis_ioc/static/vendor/swagger-ui-5.35.0/
	sed -i '/sourceMappingURL/d' gis_ioc/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js \
	  gis_ioc/static/vendor/swagger-ui-5.35.0/swagger-ui.css

db-stop:
	-$(BIN)/gis-ioc db stop

clean: db-stop
	rm -rf $(VENV) .gis-ioc .pytest_cache .mypy_cache .ruff_cache
