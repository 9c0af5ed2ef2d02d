"""The published contract: api/openapi.json is the app's document, and lists every endpoint."""

from __future__ import annotations

import json

from gis_ioc.settings import PROJECT_ROOT
from gis_ioc.web.app import openapi_document


def test_committed_openapi_matches_the_app():
    committed = (PROJECT_ROOT / "api" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document() + "\n", "api/openapi.json is stale: run `gis-ioc openapi`"


def test_every_endpoint_is_in_the_contract():
    paths = json.loads(openapi_document())["paths"]
    for path in ("/", "/conformance", "/collections", "/collections/{collection_id}",
                 "/collections/{collection_id}/items", "/collections/{collection_id}/items/{feature_id}",
                 "/collections/{collection_id}/queryables", "/health", "/ready"):
        assert path in paths, path
    writes = {("/collections/{collection_id}/items", "post"),
              ("/collections/{collection_id}/items/{feature_id}", "put"),
              ("/collections/{collection_id}/items/{feature_id}", "patch"),
              ("/collections/{collection_id}/items/{feature_id}", "delete"),
              ("/collections/{collection_id}/import", "post"), ("/collections", "post")}
    for path, method in writes:
        assert method in paths[path], (path, method)
    items = paths["/collections/{collection_id}/items"]["get"]
    assert {p["name"] for p in items["parameters"]} >= {"bbox", "bbox-crs", "datetime", "limit", "offset", "filter",
                                                         "filter-lang", "sortby", "properties", "crs", "f"}
    assert items["operationId"] == "getFeatures"
