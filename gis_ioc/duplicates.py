"""Possible duplicate reports: callers report the same event many times (1022, 113, the app, a camera).

A new report is compared with the active features of a compatible kind near it in space and time, by the
layer's rules (``duplicates`` in ``layers/incidents.yaml``: a traffic accident within 300 m and 2 h, a
forest fire within 3 km and 24 h, a flood within 3 km and 72 h…). Candidates are ranked by how near they
are in both (1 = same place, same time).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import cql2_sql
from gis_ioc.catalog import Layer, quote_ident, quote_table
from gis_ioc.errors import InvalidInput

LIMIT = 5


def possible(conn: Connection, layer: Layer, geometry: dict[str, Any], kind: str, at: datetime,
             exclude: Any = None, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The active features that may report the same event as ``geometry`` of ``kind`` at ``at``, best first."""
    config = layer.duplicates
    if config is None:
        return []
    rule = config.rules.get(kind) or config.rules.get("default")
    if rule is None:
        return []
    kinds = rule.kinds or [kind]
    label = layer.style.label or layer.id_column
    geom, when = quote_ident(layer.geometry.column), quote_ident(layer.datetime_column or "")
    rows = conn.execute(sa.text(f"""
        WITH g AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(:geometry), 4326) AS g)
        SELECT t.{quote_ident(layer.id_column)} AS id, t.{quote_ident(label)} AS name,
               t.{quote_ident(config.kind_column)} AS kind, t.{quote_ident(config.status_column)} AS status,
               t.{when} AS at, ST_Distance(t.{geom}::geography, g.g::geography) AS metres,
               abs(extract(epoch FROM t.{when} - :at)) / 60 AS minutes
        FROM {quote_table(layer.table)} t, g
        WHERE t.{quote_ident(config.status_column)} = ANY(:active) AND t.{quote_ident(config.kind_column)} = ANY(:kinds)
          AND t.{quote_ident(layer.id_column)} IS DISTINCT FROM :exclude AND {layer.events_only()}
          AND t.{geom} && ST_Expand(g.g, :box) AND ST_DWithin(t.{geom}::geography, g.g::geography, :metres)
          AND t.{when} BETWEEN :at - make_interval(secs => :window) AND :at + make_interval(secs => :window)
    """), {"geometry": json.dumps(geometry), "at": at, "active": config.active, "kinds": kinds, "exclude": exclude,
           "box": cql2_sql.box_degrees(rule.distance_m, cql2_sql.max_abs_latitude(geometry)), "metres": rule.distance_m,
           "window": rule.window_h * 3600}).mappings().all()
    found = []
    for row in rows:
        score = 1 - 0.5 * float(row["metres"]) / rule.distance_m - 0.5 * float(row["minutes"]) / (rule.window_h * 60)
        found.append({"id": row["id"], "name": row["name"], "kind": row["kind"], "status": row["status"],
                      "at": row["at"].isoformat() if row["at"] else None, "distance_m": round(float(row["metres"])),
                      "minutes_apart": round(float(row["minutes"])), "score": round(score, 3)})
    found.sort(key=lambda r: -r["score"])
    return found[:limit]


def of_feature(conn: Connection, layer: Layer, feature_id: Any) -> list[dict[str, Any]]:
    """The possible duplicates of a stored feature (after a create)."""
    config = layer.duplicates
    if config is None or not layer.datetime_column:
        return []
    geom = quote_ident(layer.geometry.column)
    row = conn.execute(sa.text(
        f"SELECT ST_AsGeoJSON({geom})::json AS g, {quote_ident(config.kind_column)} AS k, "
        f"{quote_ident(layer.datetime_column)} AS at FROM {quote_table(layer.table)} "
        f"WHERE {quote_ident(layer.id_column)} = :id"), {"id": feature_id}).mappings().first()
    if row is None or row["at"] is None or row["k"] is None:
        return []
    geometry = row["g"] if isinstance(row["g"], dict) else json.loads(row["g"])
    return possible(conn, layer, geometry, row["k"], row["at"], exclude=feature_id)


def check_kind(layer: Layer, kind: str) -> str:
    """A kind the layer knows (400 naming ``type`` otherwise)."""
    config = layer.duplicates
    assert config is not None
    allowed = layer.properties[config.kind_column].enum
    if allowed and kind not in allowed:
        raise InvalidInput(f"type: {kind!r} is not one of {', '.join(allowed)}", param="type")
    return kind
