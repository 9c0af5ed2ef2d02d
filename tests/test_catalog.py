"""The layer catalog: the YAML files validate, errors name file and field, and match the tables."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa
import yaml

from gis_ioc.catalog import Catalog, validate_folder
from gis_ioc.errors import CatalogError, LayerNotFound
from gis_ioc.settings import PROJECT_ROOT

LAYERS_DIR = PROJECT_ROOT / "layers"
SQL_TYPES = {
    "string": {"text", "character varying"},
    "integer": {"integer", "bigint", "smallint"},
    "number": {"double precision", "numeric", "real"},
    "boolean": {"boolean"},
    "date": {"date"},
    "datetime": {"timestamp with time zone"},
}


def test_built_in_layers_are_valid():
    layers, problems = validate_folder(LAYERS_DIR)
    assert problems == []
    assert sorted(layer.id for layer in layers) == ["admin_units", "cameras", "incidents", "infrastructure"]


def test_catalog_matches_the_tables(engine):
    """Every property is a column of that type, and every column but the geometry is a property."""
    catalog = Catalog.from_folder(LAYERS_DIR, engine)
    with engine.connect() as conn:
        for layer in catalog.layers(conn):
            columns = dict(conn.execute(sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = :t"), {"s": layer.schema_name, "t": layer.table_name}).all())
            assert set(columns) - {layer.geometry.column} == set(layer.properties), layer.id
            for name, prop in layer.properties.items():
                assert columns[name] in SQL_TYPES[prop.type.value], f"{layer.id}.{name}"


def _broken(tmp_path, edit):  # type: ignore[no-untyped-def]
    folder = tmp_path / "layers"
    shutil.copytree(LAYERS_DIR, folder)
    path = folder / "cameras.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return folder, path


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d.update(titel="typo"), "titel", "Extra inputs are not permitted"),
        (lambda d: d["properties"]["status"].update(type="text"), "properties.status.type", "Input should be"),
        (lambda d: d["style"].update(color_by="colour"), "(top level)", "style.color_by 'colour'"),
        (lambda d: d["style"].update(min_zoom=30), "style.min_zoom", "less than or equal to 24"),
        (lambda d: d.update(id="Cameras!"), "id", "String should match pattern"),
        (lambda d: d["geometry"].update(types=["Circle"]), "geometry.types.0", "Input should be"),
    ],
)
def test_invalid_layer_file_names_file_and_field(tmp_path, run_cli, edit, field, message):
    folder, path = _broken(tmp_path, edit)
    _, problems = validate_folder(folder)
    assert any(p.startswith(f"{path}: {field}: ") and message in p for p in problems), problems
    code, _, err = run_cli("layers", "validate", str(folder))
    assert code == 1
    assert f"{path}: {field}" in err


def test_unreadable_yaml_names_the_line(tmp_path):
    folder = tmp_path / "layers"
    folder.mkdir()
    (folder / "roads.yaml").write_text("id: roads\ntitle: [unclosed\n")
    _, problems = validate_folder(folder)
    assert problems and problems[0].startswith(f"{folder / 'roads.yaml'}: line ")


def test_an_invalid_catalog_stops_the_service(tmp_path):
    folder, _ = _broken(tmp_path, lambda d: d.pop("title"))
    with pytest.raises(CatalogError, match="cameras.yaml: title: Field required"):
        Catalog.from_folder(folder)


def test_unknown_layer_names_the_known_ones(engine):
    catalog = Catalog.from_folder(LAYERS_DIR, engine)
    with pytest.raises(LayerNotFound, match="no layer 'bridges' \\(layers: admin_units, cameras"):
        catalog.get("bridges")


def test_cli_validate_passes_on_the_built_in_layers(run_cli):
    code, out, _ = run_cli("layers", "validate")
    assert code == 0
    assert "4 layer files valid" in out
