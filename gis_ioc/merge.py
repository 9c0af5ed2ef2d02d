"""Merging duplicate reports: the same event reported several times (1022, 113, the app, a camera) is one incident.

A report merged into the main incident keeps its row, its source and its time; it names the main
incident (``merged_into``) and the main incident counts its reports (``reports``). Counts — the KPIs,
statistics per unit, the low-zoom cells — and the wall's map see the event once (``Layer.events_only``).
Both steps are audited on both features, and a merge is undone by ``unmerge``. A report that had reports
of its own brings them along, so a chain never forms: every report names a main incident directly.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import auth
from gis_ioc.auth import Principal
from gis_ioc.catalog import Layer, quote_ident, quote_table
from gis_ioc.edits import check_if_match, row_json
from gis_ioc.errors import InvalidInput, NotFound


def _columns(layer: Layer) -> tuple[str, str]:
    config = layer.duplicates
    if config is None or config.merged_column is None or config.reports_column is None:
        raise NotFound(f"layer {layer.id!r} does not merge reports (no duplicates.merged_column)",
                       param="collectionId")
    return quote_ident(config.merged_column), quote_ident(config.reports_column)


def duplicate_id(layer: Layer, body: Any) -> Any:
    """The report to merge, from a body ``{"duplicate": id}``."""
    if not isinstance(body, dict) or "duplicate" not in body:
        raise InvalidInput('body: give the report to merge as {"duplicate": id}', param="duplicate")
    value = body["duplicate"]
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise InvalidInput("duplicate: a feature id is expected", param="duplicate")
    try:
        return layer.feature_key(str(value))
    except NotFound:
        raise NotFound(f"duplicate: layer {layer.id!r} has no feature {value!r}", param="duplicate") from None


def _lock(conn: Connection, layer: Layer, main: Any, report: Any) -> dict[Any, dict[str, Any]]:
    """Both rows, locked in id order (two merges crossing never deadlock)."""
    merged, reports = _columns(layer)
    key = quote_ident(layer.id_column)
    rows = conn.execute(sa.text(
        f"SELECT {key} AS id, {merged} AS merged_into, {reports} AS reports FROM {quote_table(layer.table)} "
        f"WHERE {key} = ANY(:ids) ORDER BY {key} FOR UPDATE"), {"ids": [main, report]}).mappings().all()
    found = {r["id"]: dict(r) for r in rows}
    if main not in found:
        raise NotFound(f"layer {layer.id!r} has no feature {main!r}", param="featureId")
    if report not in found:
        raise NotFound(f"duplicate: layer {layer.id!r} has no feature {report!r}", param="duplicate")
    return found


def merge(conn: Connection, layer: Layer, main: Any, report: Any, principal: Principal | None,
          if_match: str | None = None) -> bool:
    """Merge ``report`` into ``main`` (on an open transaction); False when it already was."""
    merged, reports = _columns(layer)
    if main == report:
        raise InvalidInput(f"duplicate: feature {report} cannot be merged into itself", param="duplicate")
    rows = _lock(conn, layer, main, report)
    if rows[main]["merged_into"] is not None:
        raise InvalidInput(f"feature {main} is itself a report merged into {rows[main]['merged_into']}; merge into "
                           f"{rows[main]['merged_into']} instead", param="featureId")
    if rows[report]["merged_into"] == main:
        return False
    if rows[report]["merged_into"] is not None:
        raise InvalidInput(f"duplicate: feature {report} is already merged into {rows[report]['merged_into']}; "
                           "unmerge it there first", param="duplicate")
    before_main, tag = row_json(conn, layer, main, lock=False) or ({}, "")
    check_if_match(if_match, tag, layer, main)
    before_report = (row_json(conn, layer, report, lock=False) or ({}, ""))[0]
    table, key = quote_table(layer.table), quote_ident(layer.id_column)
    moved = conn.execute(sa.text(f"UPDATE {table} SET {merged} = :main WHERE {merged} = :report"),
                         {"main": main, "report": report}).rowcount  # its own reports come along
    conn.execute(sa.text(f"UPDATE {table} SET {merged} = :main, {reports} = 0 WHERE {key} = :report"),
                 {"main": main, "report": report})
    conn.execute(sa.text(f"UPDATE {table} SET {reports} = {reports} + :n WHERE {key} = :main"),
                 {"main": main, "n": 1 + moved})
    _audit(conn, layer, principal, main, "merge", before_main)
    _audit(conn, layer, principal, report, "merged", before_report)
    return True


def unmerge(conn: Connection, layer: Layer, main: Any, report: Any, principal: Principal | None) -> None:
    """Undo a merge: ``report`` stands alone again (on an open transaction)."""
    merged, reports = _columns(layer)
    rows = _lock(conn, layer, main, report)
    if rows[report]["merged_into"] != main:
        raise NotFound(f"duplicate: feature {report} is not a report merged into {main}", param="duplicate")
    before_main = (row_json(conn, layer, main, lock=False) or ({}, ""))[0]
    before_report = (row_json(conn, layer, report, lock=False) or ({}, ""))[0]
    table, key = quote_table(layer.table), quote_ident(layer.id_column)
    conn.execute(sa.text(f"UPDATE {table} SET {merged} = NULL WHERE {key} = :report"), {"report": report})
    conn.execute(sa.text(f"UPDATE {table} SET {reports} = greatest({reports} - 1, 0) WHERE {key} = :main"),
                 {"main": main})
    _audit(conn, layer, principal, main, "unmerge", before_main)
    _audit(conn, layer, principal, report, "unmerged", before_report)


def _audit(conn: Connection, layer: Layer, principal: Principal | None, feature: Any, operation: str,
           before: dict[str, Any]) -> None:
    after = row_json(conn, layer, feature, lock=False)
    auth.audit(conn, principal, layer.id, feature, operation, before, after[0] if after else None)
