"""Statistics per administrative unit: counts, per km² and a breakdown, by the units in force on a date.

Incidents by commune are read from the counts the database keeps (migration 018) when they answer; otherwise,
and for every other layer, from the rows.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import partitions
from gis_ioc.analysis_common import IN_FORCE, LEVELS, Window, filter_sql, layer_named, windowed
from gis_ioc.catalog import Catalog, Layer, PropertyType, quote_ident, quote_table
from gis_ioc.errors import InvalidInput

_LINEAGE_CODE = """coalesce((
    SELECT l.new_code FROM admin_units o
    JOIN admin_lineage l ON l.old_code = o.code AND l.old_valid_from = o.valid_from
    JOIN admin_units n ON n.code = l.new_code AND n.valid_from = l.new_valid_from
    WHERE o.code = t.commune_code AND o.level = 'commune'
      AND o.valid_from <= ({when} AT TIME ZONE 'Asia/Ho_Chi_Minh')::date
      AND (o.valid_to IS NULL OR o.valid_to > ({when} AT TIME ZONE 'Asia/Ho_Chi_Minh')::date)
      AND n.valid_from <= :on AND (n.valid_to IS NULL OR n.valid_to > :on)
    ORDER BY (l.relation = 'split' AND NOT ST_Intersects(n.geom, {point})), l.area_share DESC
    LIMIT 1), t.commune_code)"""


def stats(conn: Connection, catalog: Catalog, layer_id: str, by: str = "district", *,
          filter_text: str | None = None, window: Window | None = None, at: date | None = None,
          breakdown: str | None = None, through_lineage: bool = False, archived: bool = False,
          statement_only: bool = False) -> dict[str, Any]:
    """Count, count per km² and a breakdown by one property, per administrative unit.

    Units are those of level ``by`` in force on ``at``; every unit is listed, those with nothing too.
    Features count where they lie, or, with ``through_lineage`` (incidents by commune), by the
    commune recorded when they were reported, carried to the units of ``at`` through
    ``admin_lineage`` (a split commune's incidents go to the new unit that holds them). ``archived`` counts
    the months archived out of the layer too (``gis-ioc db archive``), read from their rows.
    ``statement_only`` returns the SQL and its parameters instead (for benchmarks against psql).
    """
    layer = layer_named(catalog, conn, layer_id)
    source = partitions.with_archive(conn, layer.table) if archived else quote_table(layer.table)
    if by not in LEVELS:
        raise InvalidInput(f"by: {by!r} is not one of {', '.join(LEVELS)}", param="by")
    if breakdown is not None:
        prop = layer.property(breakdown, "breakdown")
        if prop.enum is None and prop.type != PropertyType.boolean:
            fixed = [n for n, p in layer.properties.items() if p.enum is not None or p.type == PropertyType.boolean]
            raise InvalidInput(f"breakdown: {breakdown!r} has no fixed set of values; choose one of "
                               f"{', '.join(fixed) or '(none in this layer)'}", param="breakdown")
    on = at or date.today()
    filter_where, params = filter_sql(layer, filter_text)
    base = f"{filter_where} AND {layer.events_only()}"  # an event counts once, not once per report merged into it
    where, params = windowed(layer, filter_where, params, window)
    where += f" AND {layer.events_only()}"
    geom = f"t.{quote_ident(layer.geometry.column)}"
    params.update({"level": by, "on": on})
    point = geom if layer.points_only else f"ST_PointOnSurface({geom})"  # a feature counts in one unit
    category = f"t.{quote_ident(breakdown)}::text" if breakdown else "NULL::text"
    counts_category = quote_ident(breakdown) if breakdown else "NULL::text"  # the same, in the kept counts
    units_cte = ("WITH units AS (SELECT code, name, geom, ST_Area(geom::geography) / 1e6 AS km2 FROM admin_units "
                 f"WHERE level = :level AND {IN_FORCE}), ")
    if through_lineage:
        if by != "commune" or "commune_code" not in layer.properties or not layer.datetime_column:
            raise InvalidInput("through_lineage: only for a layer with commune_code and a time column, by commune",
                               param="through_lineage")
        hits = (f"hits AS (SELECT {_LINEAGE_CODE.format(point=point, when=f't.{quote_ident(layer.datetime_column)}')} "
                f"AS code, {category} AS category, count(*) AS n FROM {source} t WHERE {where} "
                "GROUP BY 1, 2) ")
    elif (counted := None if archived else _counted(conn, layer, by, filter_text, window, breakdown, on)) \
            == "totals":
        # every incident in today's communes: the counts the database keeps (migration 018), not the rows
        hits = (f"hits AS (SELECT unit_code AS code, {counts_category} AS category, sum(n) AS n "
                "FROM incident_totals WHERE n <> 0 GROUP BY 1, 2) ")
    elif window is not None:
        # A time window is selective and indexed: the rows in it first (by the time index), then each placed in
        # its unit (in the window-less plan the GiST index walked every feature of a unit before the window
        # filtered them: the wall's 24-hour KPIs took 2 s at 1M incidents, 0.16 s so). With the counts kept
        # (migration 018), the window's whole hours come from them and only the rows of its ragged ends are read.
        picked_where, sign = where, "1"
        hourly = ""
        if counted == "hourly":
            column = f"t.{quote_ident(layer.datetime_column or '')}"
            # the whole hours inside the window (UTC), as values: each ragged end is then an index range; the
            # whole UTC days inside those hours come from the daily counts (migration 022), the hours at either
            # end from the hourly ones. A ragged end longer than half an hour is counted the other way round: its
            # whole hour from the counts, less the rows of the hour outside the window (at most 30 minutes of rows
            # read, not 59: at 10M incidents an hour holds ~2,300)
            bounds = conn.execute(sa.text(
                "WITH h AS (SELECT CASE WHEN date_trunc('hour', CAST(:s AS timestamptz), 'UTC') = CAST(:s AS "
                "timestamptz) THEN CAST(:s AS timestamptz) ELSE date_trunc('hour', CAST(:s AS timestamptz), 'UTC') "
                "+ interval '1 hour' END AS hs, date_trunc('hour', CAST(:e AS timestamptz), 'UTC') AS he) "
                "SELECT hs, he, CASE WHEN date_trunc('day', hs, 'UTC') = hs THEN hs "
                "ELSE date_trunc('day', hs, 'UTC') + interval '1 day' END, date_trunc('day', he, 'UTC'), "
                "hs - CAST(:s AS timestamptz) > interval '30 minutes' AND hs <= coalesce(he, hs), "
                "CAST(:e AS timestamptz) - he > interval '30 minutes' AND coalesce(hs, he) <= he FROM h"),
                {"s": window.start, "e": window.end}).one()
            start_back, end_on = bool(bounds[4]), bool(bounds[5])
            edges, whole, days, hours_before, hours_after = [], [], [], [], []
            if window.start is not None:
                params.update(h_start=bounds[0] - timedelta(hours=1) if start_back else bounds[0], d_start=bounds[2])
                edges.append(f"({column} >= :h_start AND {column} < :w_start)" if start_back else
                             f"({column} >= :w_start AND {column} < :h_start)")
                whole.append("c.hour >= :h_start")
                days.append("d.day >= :d_start")
                hours_before = ["c.hour >= :h_start", "c.hour < :d_start"]
            if window.end is not None:
                params.update(h_end=bounds[1] + timedelta(hours=1) if end_on else bounds[1], d_end=bounds[3])
                edges.append(f"({column} >= :w_end AND {column} < :h_end)" if end_on else
                             f"({column} >= :h_end AND {column} < :w_end)")
                whole.append("c.hour < :h_end")
                days.append("d.day < :d_end")
                hours_after = ["c.hour >= :d_end", "c.hour < :h_end"]
            if window.start is not None and window.end is not None and not (start_back or end_on):
                edges = [f"({column} >= :w_start AND {column} < :w_end AND ({column} < :h_start OR "
                         f"{column} >= :h_end))"]  # within one hour, the edges overlap: each row once
            picked_where = f"{base} AND ({' OR '.join(edges)})"
            # a row outside the window is there to be taken off its hour's count
            inside = ([f"{column} >= :w_start"] if window.start is not None else []) + (
                [f"{column} < :w_end"] if window.end is not None else [])
            sign = f"CASE WHEN {' AND '.join(inside)} THEN 1 ELSE -1 END" if inside else "1"
            spans_a_day = (window.start is None or window.end is None or bounds[2] < bounds[3])
            # without a breakdown, the communes' own counters (migration 025): a few hundred, not every
            # (type, severity, status) counter of the window
            by_hour, by_day = (("incident_counts c", "incident_counts_daily d") if breakdown else (
                "(SELECT unit_code, at AS hour, n FROM incident_unit_counts WHERE period = 'hour') c",
                "(SELECT unit_code, at AS day, n FROM incident_unit_counts WHERE period = 'day') d"))
            if spans_a_day:
                ends = " OR ".join(f"({' AND '.join(h)})" for h in (hours_before, hours_after) if h)
                hourly = (f"SELECT unit_code AS code, {counts_category} AS category, n FROM {by_day} "
                          f"WHERE {' AND '.join(days)} UNION ALL "
                          f"SELECT unit_code AS code, {counts_category} AS category, n FROM {by_hour} "
                          f"WHERE {ends} UNION ALL ")
            else:
                hourly = (f"SELECT unit_code AS code, {counts_category} AS category, n FROM {by_hour} "
                          f"WHERE {' AND '.join(whole)} UNION ALL ")
        # the rows are placed where the counts place them when the counts answer (the same communes, in the
        # indexed pieces of migration 018: 3,000 rows at 10M took 31 ms in pieces cut here), else in pieces of
        # the units cut here
        # (a row strictly inside a grid cell that one commune covers whole is placed by a lookup, migration 027:
        # one index probe per row, written so; as a join, at 10M the planner hashed all 38,519 cells for the
        # 1,900 rows of a ragged hour, 14 of the statement's 39 ms)
        placed = ("celled AS (SELECT t.*, CASE WHEN gis_ioc_inside_cell(t.geom) THEN (SELECT c.code FROM "
                  "incident_count_cells c WHERE c.cell = gis_ioc_count_cell(t.geom)) END AS code FROM picked t), "
                  "placed AS (SELECT code, category, n FROM celled WHERE code IS NOT NULL UNION ALL ("
                  "SELECT DISTINCT ON (t.id) p.code, t.category, t.n FROM celled t JOIN incident_count_pieces p "
                  "ON p.geom && t.geom AND ST_Intersects(p.geom, t.geom) WHERE t.code IS NULL ORDER BY t.id, p.code)), "
                  if counted == "hourly" else
                  "pieces AS (SELECT code, ST_Subdivide(geom, 32) AS geom FROM units), "
                  "placed AS (SELECT DISTINCT ON (t.id) p.code, t.category, t.n FROM pieces p JOIN picked t "
                  "ON t.geom && p.geom AND ST_Intersects(p.geom, t.geom) ORDER BY t.id, p.code), ")
        hits = (f"picked AS MATERIALIZED (SELECT t.{quote_ident(layer.id_column)} AS id, {point} AS geom, "
                f"{category} AS category, {sign} AS n FROM {source} t WHERE {picked_where}), " + placed +
                f"hits AS (SELECT code, category, sum(n) AS n FROM ({hourly}"
                "SELECT code, category, n FROM placed) x GROUP BY code, category) ")
    else:
        # Units cut into small pieces make each point-in-polygon test cheap; `&&` on the indexed
        # column lets the GiST index find the candidates; DISTINCT ON counts a feature on a shared
        # boundary once, in the unit with the smallest code (as locate does).
        hits = ("pieces AS (SELECT code, ST_Subdivide(geom, 32) AS geom FROM units), "
                f"placed AS (SELECT DISTINCT ON (t.{quote_ident(layer.id_column)}) p.code, {category} AS category "
                f"FROM pieces p JOIN {source} t ON {geom} && p.geom AND ST_Intersects(p.geom, "
                f"{point}) WHERE {where} ORDER BY t.{quote_ident(layer.id_column)}, p.code), "
                "hits AS (SELECT code, category, count(*) AS n FROM placed GROUP BY code, category) ")
    sql = (units_cte + hits + "SELECT u.code, u.name, u.km2, h.category, coalesce(h.n, 0) AS n FROM units u "
           "LEFT JOIN hits h ON h.code = u.code ORDER BY u.code, h.category")
    if statement_only:
        return {"sql": sql, "params": params}
    per_unit: dict[str, dict[str, Any]] = {}
    for r in conn.execute(sa.text(sql), params).mappings():
        entry = per_unit.setdefault(r["code"], {"code": r["code"], "name": r["name"], "area_km2": round(r["km2"], 3),
                                                "count": 0, "breakdown": {}})
        entry["count"] += int(r["n"])
        if breakdown and r["category"] is not None:
            entry["breakdown"][r["category"]] = int(r["n"])
    units = list(per_unit.values())
    if not units:
        hint = ""
        if by == "district":
            hint = " (districts were abolished on 2025-07-01: give an earlier at= or by=commune)"
        raise InvalidInput(f"by: no {by} units in force on {on.isoformat()}{hint}", param="by")
    for u in units:
        u["per_km2"] = round(u["count"] / u["area_km2"], 4) if u["area_km2"] else None
        if not breakdown:
            del u["breakdown"]
    return {"layer": layer.id, "by": by, "at": on.isoformat(), "through_lineage": through_lineage, "units": units,
            "total": sum(u["count"] for u in units)}


COUNTED_BREAKDOWNS = (None, "type", "severity", "status")


def _counted(conn: Connection, layer: Layer, by: str, filter_text: str | None, window: Window | None,
             breakdown: str | None, on: date) -> str | None:
    """Which counts kept by the database (migration 018) answer these stats: "totals", "hourly" or None.

    They answer for incidents (not a per-geometry part) by commune, no filter, a breakdown they keep, counts made
    for the communes in force on ``on``: "totals" without a window, "hourly" (its whole hours) with one.
    """
    if layer.id != "incidents" or layer.table != "public.incidents" or by != "commune" or filter_text:
        return None
    if breakdown not in COUNTED_BREAKDOWNS or layer.datetime_column != "reported_at":
        return None
    fresh = conn.execute(sa.text("SELECT units_key = gis_ioc_units_key(:on) FROM incident_counts_state"),
                         {"on": on}).scalar()
    if not fresh:
        return None
    return "hourly" if window is not None and (window.start is not None or window.end is not None) else "totals"
