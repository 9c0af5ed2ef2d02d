"""GDAL's ogr2ogr and QGIS against a served process on the demo province: every feature, typed, filtered."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest
import sqlalchemy as sa

from .conftest import served

# every collection a mixed layer is published as, with the geometry type GDAL must give it, and its rows in SQL
VIEWS = {
    "incidents.points": ("Point", "SELECT count(*) FROM incidents WHERE ST_Dimension(geom) = 0"),
    "incidents.polygons": ("MultiPolygon", "SELECT count(*) FROM incidents WHERE ST_Dimension(geom) = 2"),
    "infrastructure.points": ("Point", "SELECT count(*) FROM infrastructure WHERE ST_Dimension(geom) = 0"),
    "infrastructure.lines": ("MultiLineString", "SELECT count(*) FROM infrastructure WHERE ST_Dimension(geom) = 1"),
    "infrastructure.polygons": ("MultiPolygon",
                                "SELECT count(*) FROM infrastructure WHERE ST_Dimension(geom) = 2"),
    "admin_units": ("MultiPolygon", "SELECT count(*) FROM admin_units"),
    "cameras": ("Point", "SELECT count(*) FROM cameras"),
}


@pytest.fixture(scope="module")
def server(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(demo_url, tmp_path_factory.mktemp("clients-home")) as url:
        yield url


def _sql(engine, query: str) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(sa.text(query)).scalar_one())


def _ogr2ogr(out: Path, source: str, *args: str) -> list[str]:
    """Run ogr2ogr as a user would (no options), return the URLs it fetched."""
    done = subprocess.run(["ogr2ogr", "-f", "GPKG", str(out), source, *args], capture_output=True, text=True,
                          env={**os.environ, "CPL_DEBUG": "ON"}, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not normally allowed by the GeoPackage specification" not in done.stderr
    return [line.split("Fetch(", 1)[1].rstrip(")") for line in done.stderr.splitlines() if "HTTP: Fetch(" in line]


def test_ogr2ogr_gets_every_feature_of_every_geometry_type(server, demo_engine, tmp_path):
    out = tmp_path / "ioc.gpkg"
    _ogr2ogr(out, f"OAPIF:{server}", *VIEWS)
    layers = dict(pyogrio.list_layers(out))
    for name, (kind, query) in VIEWS.items():
        assert layers[name] == kind, name
        assert pyogrio.read_info(out, layer=name)["features"] == _sql(demo_engine, query), name
    # together the views hold every feature of the mixed layers, each once
    for mixed in ("incidents", "infrastructure"):
        ids = [pyogrio.read_dataframe(out, layer=v, columns=[], read_geometry=False, fid_as_index=True).index
               for v in VIEWS if v.startswith(mixed + ".")]
        assert sum(len(i) for i in ids) == _sql(demo_engine, f"SELECT count(*) FROM {mixed}")
    # fields are typed from the collection's schema (describedby)
    info = pyogrio.read_info(out, layer="incidents.points")
    fields = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert fields["reported_at"].startswith("datetime64") and fields["severity"] == "object"


def test_an_attribute_filter_is_evaluated_by_the_server(server, demo_engine, tmp_path):
    extreme = _sql(demo_engine, "SELECT count(*) FROM incidents WHERE severity = 'extreme' AND ST_Dimension(geom) = 0")
    urls = _ogr2ogr(tmp_path / "extreme.gpkg", f"OAPIF:{server}", "incidents.points", "-where", "severity='extreme'")
    assert pyogrio.read_info(tmp_path / "extreme.gpkg")["features"] == extreme
    pages = [u for u in urls if "/items?" in u]
    assert all("severity=extreme" in u for u in pages[1:])  # the first page is GDAL reading the layer's schema
    assert len(pages) <= math.ceil(extreme / 10) + 2  # pages of GDAL 3.6's size (10), not the whole layer


def test_number_matched_is_exact_or_absent(server, demo_engine):
    import httpx

    first = httpx.get(f"{server}/collections/incidents/items", params={"limit": 5}).json()
    assert first["numberMatched"] == _sql(demo_engine, "SELECT count(*) FROM incidents")
    later = httpx.get(next(link["href"] for link in first["links"] if link["rel"] == "next")).json()
    assert "numberMatched" not in later and "numberMatchedIsEstimate" not in later
    assert json.dumps(first).count("Estimate") == 0


def test_a_view_is_read_only(server):
    import httpx

    response = httpx.post(f"{server}/collections/incidents.polygons/items", json={"type": "Feature"},
                          headers={"Authorization": "Bearer gioc_nope"})
    assert response.status_code in (401, 403)
    assert httpx.get(f"{server}/collections/incidents.lines").status_code == 404
    assert httpx.get(f"{server}/collections/cameras.points").status_code == 404


QGIS_SCRIPT = r"""
import json, sys, time
from qgis.core import QgsApplication, QgsVectorLayer, QgsWkbTypes
app = QgsApplication([], False)
app.initQgis()
server, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    started = time.perf_counter()
    layer = QgsVectorLayer(f"url='{server}' typename='{name}'", name, "OAPIF")
    opened = time.perf_counter() - started
    if not layer.isValid():
        out[name] = {"valid": False}
        continue
    kinds = {}
    for feature in layer.getFeatures():
        kind = QgsWkbTypes.displayString(feature.geometry().wkbType())
        kinds[kind] = kinds.get(kind, 0) + 1
    out[name] = {"valid": True, "type": QgsWkbTypes.displayString(layer.wkbType()), "kinds": kinds,
                 "open_s": round(opened, 3), "read_s": round(time.perf_counter() - started, 3),
                 "fields": {f.name(): f.typeName() for f in layer.fields()}}
print(json.dumps(out), flush=True)
import os
os._exit(0)  # QGIS 3.22 may crash while tearing down its providers; what it read is printed already
"""


def _qgis_python() -> str | None:
    python = "/usr/bin/python3"
    found = subprocess.run([python, "-c", "import qgis.core"], capture_output=True, check=False) \
        if Path(python).exists() else None
    return python if found is not None and found.returncode == 0 else None


def test_qgis_opens_each_layer_with_every_feature(server, demo_engine, tmp_path):
    python = _qgis_python()
    assert python, "QGIS's Python bindings are missing: `make setup` installs python3-qgis"
    script = tmp_path / "open_layers.py"
    script.write_text(QGIS_SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path),
           "HOME": str(tmp_path), "PYTHONPATH": ""}
    done = subprocess.run([python, str(script), server, *VIEWS], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    opened = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (kind, query) in VIEWS.items():
        assert opened[name]["valid"], name
        assert sum(opened[name]["kinds"].values()) == _sql(demo_engine, query), name
        assert set(opened[name]["kinds"]) == {kind}, (name, opened[name])



QGIS_TILES = r"""
import json, sys
from qgis.core import QgsApplication, QgsVectorTileLayer
app = QgsApplication([], False)
app.initQgis()
server = sys.argv[1]
tiles = f"{server}/tiles/admin_units,infrastructure,cameras,incidents/{{z}}/{{x}}/{{y}}.mvt"
layer = QgsVectorTileLayer(f"type=xyz&url={tiles}&zmin=0&zmax=22&styleUrl={server}/styles/wall.json", "ioc")
message, loaded = layer.loadDefaultStyle()
styles = [{"name": s.styleName(), "layer": s.layerName(), "filter": s.filterExpression(),
           "colour": s.symbol().color().name() if s.symbol() else None} for s in layer.renderer().styles()]
print(json.dumps({"valid": layer.isValid(), "loaded": loaded, "styles": styles}), flush=True)
import os
os._exit(0)
"""


def test_qgis_loads_the_vector_tiles_with_our_style_and_colours_incidents_by_severity(server, tmp_path):
    python = _qgis_python()
    assert python, "QGIS's Python bindings are missing: `make setup` installs python3-qgis"
    script = tmp_path / "tiles.py"
    script.write_text(QGIS_TILES)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path),
           "PYTHONPATH": ""}
    done = subprocess.run([python, str(script), server], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["valid"] and result["loaded"]
    styles = {s["name"]: s for s in result["styles"]}
    colours = {"extreme": "#d7191c", "severe": "#fd8d3c", "moderate": "#fecc5c", "minor": "#74add1"}
    for severity, colour in colours.items():
        style = styles[f"incidents-{severity}"]
        assert style["layer"] == "incidents" and style["colour"] == colour
        assert f"\"severity\" IS '{severity}'" in style["filter"] and "Point" in style["filter"]
    assert "Polygon" in styles["incident-areas"]["filter"]
