"""The routable road network: made by PostgreSQL from the layers that say they are its sources, and checked.

Every layer whose file has a ``network:`` block (the infrastructure's roads) gives its lines: snapped at ends that
nearly touch another line, noded where lines of the same grade level cross (a bridge or a flyover, level 1, passes
over the road below it; lines of different levels meet only where an end of one lies on the other, as a ramp
does), one edge per piece, its cost in seconds from its length and its speed (its own ``speed_kmh``, else its
class's), one-way pieces with no reverse cost. It is made into new tables and swapped in at the end, whenever a
source layer's version has moved: in the server, in a thread of its own started by the first routing call after a
write or a load, while the last network keeps answering (``ensure_beside``); elsewhere before the call
(``ensure``, ``gis-ioc network build``). ``gis_ioc.routing`` answers the questions on it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gis_ioc.catalog import Catalog, Layer, Network, quote_ident, quote_table
from gis_ioc.errors import InvalidInput

SNAP_DEG = 2e-6  # a line's end this near another line (about 0.2 m) meets it
BUILD_LOCK = 62_017  # advisory lock: one process makes the network at a time
EDGES_SQL = "SELECT id, source, target, cost, reverse_cost FROM network_edges"
BUILD_FORMAT = 2  # one more whenever ``build`` makes a different network from the same roads (2: ends merged)
FORMAT_KEY = "gis-ioc network format"
log = logging.getLogger("gis_ioc.road_network")


def _literal(sql: str) -> str:
    return "'" + sql.replace("'", "''") + "'"


def sources(catalog: Catalog, conn: Connection | None = None) -> list[Layer]:
    """The layers whose lines make the network (their files say so: built-in layers)."""
    return [layer for layer in catalog.builtin.values() if layer.network is not None]


def settings_of(layers: list[Layer]) -> Network:
    """The off-road speed and distance limit: the first source's."""
    return layers[0].network if layers and layers[0].network else Network()


def _versions(conn: Connection, layers: list[Layer]) -> dict[str, int]:
    """The sources' layer versions, and how this release makes a network: a network made otherwise is stale."""
    rows = conn.execute(sa.text("SELECT table_name, version FROM layer_versions WHERE table_name = ANY(:t)"),
                        {"t": [lyr.table for lyr in layers]}).all()
    found = {str(r[0]): int(r[1]) for r in rows}
    return {**{lyr.table: found.get(lyr.table, 0) for lyr in layers}, FORMAT_KEY: BUILD_FORMAT}


def _roads_sql(layer: Layer) -> tuple[str, dict[str, Any]]:
    """The source's lines, one row per part, with what the network needs of them."""
    net = layer.network
    assert net is not None
    t = "t."
    bind: dict[str, Any] = {}
    where = [f"ST_Dimension(t.{quote_ident(layer.geometry.column)}) = 1"]
    key = layer.id.replace(".", "_")
    for i, (column, value) in enumerate(net.where.items()):
        where.append(f"{t}{quote_ident(column)}::text = :w_{key}_{i}")
        bind[f"w_{key}_{i}"] = value
    cls = f"{t}{quote_ident(net.class_column)}::text" if net.class_column else "NULL::text"
    cases = " ".join(f"WHEN '{k.replace(chr(39), chr(39) * 2)}' THEN {float(v)!r}" for k, v in net.speeds_kmh.items())
    speed = f"(CASE {cls} {cases} ELSE {net.default_speed_kmh!r} END)" if cases else repr(net.default_speed_kmh)
    if net.speed_column:
        speed = f"coalesce({t}{quote_ident(net.speed_column)}::double precision, {speed})"
    oneway = f"coalesce({t}{quote_ident(net.oneway_column)}, false)" if net.oneway_column else "false"
    name = f"{t}{quote_ident(net.name_column)}::text" if net.name_column else "NULL::text"
    level = f"coalesce({t}{quote_ident(net.level_column)}::integer, 0)" if net.level_column else "0"
    sql = (f"SELECT '{layer.table}'::text AS layer_table, {t}{quote_ident(layer.id_column)}::text AS road_id, "
           f"{name} AS name, {cls} AS road_class, {speed} AS speed_kmh, {oneway} AS oneway, {level} AS lvl, "
           f"(ST_Dump(ST_Force2D(t.{quote_ident(layer.geometry.column)}))).geom AS g "
           f"FROM {quote_table(layer.table)} t WHERE {' AND '.join(where)}")
    return sql, bind


def build(conn: Connection, catalog: Catalog) -> dict[str, Any]:
    """Make the network again from its sources (in the caller's transaction, swapped in at its commit)."""
    started = time.perf_counter()
    layers = sources(catalog, conn)
    if not layers:
        raise InvalidInput("network: no layer is a network source (network: in layers/*.yaml)", param="network")
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": BUILD_LOCK})
    versions = _versions(conn, layers)
    parts, bind = [], {}
    for layer in layers:
        sql, values = _roads_sql(layer)
        parts.append(sql)
        bind.update(values)
    # the sources' lines, the only statement with values bound (the sources' ``where``)
    conn.execute(sa.text("CREATE TEMP TABLE net_roads ON COMMIT DROP AS " + " UNION ALL ".join(parts)), bind)
    statements = [
        "DELETE FROM net_roads WHERE ST_IsEmpty(g) OR ST_NPoints(g) < 2",
        "ALTER TABLE net_roads ADD COLUMN n serial",
        "CREATE INDEX ON net_roads USING gist (g)",
        # lines of two levels meet only at a point both have (a vertex of each, as OpenStreetMap's shared nodes):
        # an end of one that nearly falls on a vertex of another level's line (a ramp) is moved onto it
        "CREATE TEMP TABLE net_points ON COMMIT DROP AS SELECT n, lvl, (ST_DumpPoints(g)).geom AS p FROM net_roads",
        "CREATE INDEX ON net_points USING gist (p)",
        f"UPDATE net_roads r SET g = ST_Snap(r.g, s.pts, {SNAP_DEG!r}) FROM (SELECT r2.n, ST_Collect(v.p) AS pts "
        "FROM net_roads r2 CROSS JOIN LATERAL (VALUES (ST_StartPoint(r2.g)), (ST_EndPoint(r2.g))) x(p) "
        f"JOIN net_points v ON v.lvl <> r2.lvl AND ST_DWithin(v.p, x.p, {SNAP_DEG!r}) AND NOT ST_Equals(v.p, x.p) "
        "GROUP BY r2.n) s WHERE s.n = r.n",
        # ends of one level that nearly meet (two tracks drawn to the same spot of a road) are moved onto one of
        # them, the same one for all (the end of the line made first): snapped pairwise, two ends traded places
        # and the next step bent each line through the other's old end (a 0.9 m dead end in the demo)
        "CREATE TEMP TABLE net_tips ON COMMIT DROP AS SELECT n, lvl, 0 AS i, ST_StartPoint(g) AS p FROM net_roads "
        "UNION ALL SELECT n, lvl, -1, ST_EndPoint(g) FROM net_roads",
        "CREATE INDEX ON net_tips USING gist (p)",
        "CREATE TEMP TABLE net_moves ON COMMIT DROP AS SELECT t.n, t.i, m.p FROM net_tips t CROSS JOIN LATERAL ("
        f"SELECT o.p FROM net_tips o WHERE o.lvl = t.lvl AND ST_DWithin(o.p, t.p, {SNAP_DEG!r}) ORDER BY o.n, "
        "o.i DESC LIMIT 1) m WHERE NOT ST_Equals(m.p, t.p)",
        "UPDATE net_roads r SET g = ST_SetPoint(r.g, 0, m.p) FROM net_moves m WHERE m.n = r.n AND m.i = 0",
        "UPDATE net_roads r SET g = ST_SetPoint(r.g, -1, m.p) FROM net_moves m WHERE m.n = r.n AND m.i = -1",
        "CREATE TEMP TABLE net_ends ON COMMIT DROP AS SELECT ST_StartPoint(g) AS p, lvl FROM net_roads "
        "UNION ALL SELECT ST_EndPoint(g), lvl FROM net_roads",
        "CREATE INDEX ON net_ends USING gist (p)",
        # a line passing an end of its own level that nearly touches it gets a vertex there, so noding makes the
        # junction
        f"UPDATE net_roads r SET g = ST_Snap(r.g, s.pts, {SNAP_DEG!r}) FROM (SELECT r2.n, ST_Collect(e.p) AS pts "
        f"FROM net_roads r2 JOIN net_ends e ON e.lvl = r2.lvl AND ST_DWithin(r2.g, e.p, {SNAP_DEG!r}) "
        "AND NOT ST_Intersects(r2.g, e.p) GROUP BY r2.n) s WHERE s.n = r.n",
        # noded level by level: lines of one level meet where they cross, lines of two levels never do
        "CREATE TEMP TABLE net_pieces ON COMMIT DROP AS SELECT lvl, (ST_Dump(ST_Node(ST_Collect(g)))).geom AS seg "
        "FROM net_roads GROUP BY lvl",
        "DELETE FROM net_pieces WHERE ST_Length(seg) = 0",
        "ALTER TABLE net_pieces ADD COLUMN n serial",
        # ... except where an end of one is a vertex of the other (a ramp): cut there. An end that merely lies on
        # the other's line (a dead end under a bridge) meets nothing; gis-ioc network check lists those
        "CREATE TEMP TABLE net_cuts ON COMMIT DROP AS SELECT p.n, ST_Collect(e.p) AS pts FROM net_pieces p "
        "JOIN net_ends e ON e.lvl <> p.lvl AND ST_Intersects(p.seg, e.p) "
        "AND NOT ST_Intersects(ST_Boundary(p.seg), e.p) "
        "AND EXISTS (SELECT 1 FROM ST_DumpPoints(p.seg) d WHERE ST_Equals(d.geom, e.p)) GROUP BY p.n",
        "INSERT INTO net_pieces (lvl, seg) SELECT p.lvl, (ST_Dump(ST_Split(p.seg, c.pts))).geom FROM net_pieces p "
        "JOIN net_cuts c ON c.n = p.n",
        "DELETE FROM net_pieces p USING net_cuts c WHERE p.n = c.n",
        # each piece keeps the attributes of the line it lies on (and that line's direction, for one-way roads)
        "CREATE TEMP TABLE net_segs ON COMMIT DROP AS SELECT DISTINCT ON (p.n) p.n, r.layer_table, r.road_id, r.name, "
        "r.road_class, r.speed_kmh, r.oneway, CASE WHEN r.oneway AND ST_LineLocatePoint(r.g, ST_StartPoint(p.seg)) "
        "> ST_LineLocatePoint(r.g, ST_EndPoint(p.seg)) THEN ST_Reverse(p.seg) ELSE p.seg END AS seg "
        "FROM net_pieces p JOIN net_roads r ON r.lvl = p.lvl "
        "AND ST_DWithin(r.g, ST_LineInterpolatePoint(p.seg, 0.5), 1e-7) "
        "ORDER BY p.n, ST_Distance(r.g, ST_LineInterpolatePoint(p.seg, 0.5))",
        "DROP TABLE IF EXISTS network_vertices_next, network_edges_next",
        "CREATE TABLE network_vertices_next (LIKE network_vertices INCLUDING ALL)",
        "CREATE TABLE network_edges_next (LIKE network_edges INCLUDING ALL)",
        "INSERT INTO network_vertices_next (id, geom) SELECT row_number() OVER (ORDER BY k), p FROM ("
        "SELECT DISTINCT ON (ST_AsBinary(p)) ST_AsBinary(p) AS k, p FROM (SELECT ST_StartPoint(seg) AS p FROM net_segs "
        "UNION ALL SELECT ST_EndPoint(seg) FROM net_segs) e ORDER BY ST_AsBinary(p)) d",
        "CREATE TEMP TABLE net_keys ON COMMIT DROP AS SELECT id, ST_AsBinary(geom) AS k FROM network_vertices_next",
        "CREATE INDEX ON net_keys (k)",
        "INSERT INTO network_edges_next (id, source, target, cost, reverse_cost, length_m, speed_kmh, road_class, "
        "name, layer_table, road_id, geom) SELECT s.n, a.id, b.id, l.m / (s.speed_kmh / 3.6), "
        "CASE WHEN s.oneway THEN -1 ELSE l.m / (s.speed_kmh / 3.6) END, l.m, s.speed_kmh, s.road_class, s.name, "
        "s.layer_table, s.road_id, s.seg FROM net_segs s "
        "CROSS JOIN LATERAL (SELECT ST_Length(s.seg::geography) AS m) l "
        "JOIN net_keys a ON a.k = ST_AsBinary(ST_StartPoint(s.seg)) "
        "JOIN net_keys b ON b.k = ST_AsBinary(ST_EndPoint(s.seg)) WHERE l.m > 0",
        "DROP TABLE network_edges, network_vertices",
        "ALTER TABLE network_edges_next RENAME TO network_edges",
        "ALTER TABLE network_vertices_next RENAME TO network_vertices",
        "ANALYZE network_edges",
        "ANALYZE network_vertices",
    ]
    for statement in statements:
        conn.execute(sa.text(statement))
    edges, vertices = conn.execute(sa.text(
        "SELECT (SELECT count(*) FROM network_edges), (SELECT count(*) FROM network_vertices)")).one()
    seconds = time.perf_counter() - started
    conn.execute(sa.text(
        "INSERT INTO network_state (sources, built_at, edges, vertices, build_seconds) "
        "VALUES (CAST(:s AS jsonb), now(), :e, :v, :t) ON CONFLICT (id) DO UPDATE SET sources = excluded.sources, "
        "built_at = excluded.built_at, edges = excluded.edges, vertices = excluded.vertices, "
        "build_seconds = excluded.build_seconds"),
        {"s": json.dumps(versions), "e": edges, "v": vertices, "t": seconds})
    return {"edges": int(edges), "vertices": int(vertices), "seconds": round(seconds, 2), "sources": versions}


def stale(conn: Connection, catalog: Catalog) -> bool:
    """Whether a source layer changed since the network was made (or it never was)."""
    layers = sources(catalog, conn)
    built = conn.execute(sa.text("SELECT sources FROM network_state")).scalar()
    return built is None or dict(built) != _versions(conn, layers)


_fresh_for: dict[str, int] | None = None  # the source versions this process last found the network made from


def fresh(catalog: Catalog, known: Mapping[str, int] | None) -> bool:
    """Whether the network is made from the sources' versions ``known`` (the listener's), asking nothing."""
    tables = [layer.table for layer in sources(catalog)]
    return known is not None and _fresh_for is not None and all(known.get(t) == _fresh_for.get(t) for t in tables)


@dataclass(frozen=True)
class Answering:
    """Which network answers a request: made from these source versions, and whether they are the roads of now."""

    versions: Mapping[str, int]
    current: bool

    def header(self) -> str:
        """``X-Network``: the road layers' versions it was made from, and ``current`` or ``rebuilding``."""
        made = ",".join(f"{k}={v}" for k, v in sorted(self.versions.items()) if k != FORMAT_KEY)
        return f"{made}; {'current' if self.current else 'rebuilding'}"


_rebuild_lock = threading.Lock()
_rebuilding: threading.Thread | None = None


def _rebuild(engine: Engine, catalog: Catalog) -> None:
    try:
        ensure(engine, catalog)
    except Exception:  # the next request tries again; the last good network keeps answering
        log.exception("the road network could not be made again")


def ensure_beside(engine: Engine, catalog: Catalog, known: Mapping[str, int] | None = None) -> Answering:
    """The network for a request: a stale one is made again in a thread of its own while it keeps answering.

    Only a database that never had a network waits for its first one. A road of many vertices then costs its
    writer's requests nothing: routes, nearest-by-time and the incident views go on with the network as it was
    (``Answering.current`` is false) until the new one is swapped in.
    """
    global _rebuilding
    if fresh(catalog, known):
        return answering_fresh()
    with engine.connect() as conn:
        made = conn.execute(sa.text("SELECT sources FROM network_state")).scalar()
        now = _versions(conn, sources(catalog, conn))
    if made is None:
        ensure(engine, catalog)
        return Answering(now, True)
    if dict(made) == now:
        _remember(now)
        return Answering(now, True)
    with _rebuild_lock:
        if _rebuilding is None or not _rebuilding.is_alive():
            _rebuilding = threading.Thread(target=_rebuild, args=(engine, catalog), name="gis-ioc-network",
                                           daemon=True)
            _rebuilding.start()
    return Answering(dict(made), False)


def answering_fresh() -> Answering:
    """The network ``fresh`` just found current."""
    assert _fresh_for is not None
    return Answering(_fresh_for, True)


def _remember(versions: Mapping[str, int]) -> None:
    """The source versions this process last found the network made from."""
    global _fresh_for
    _fresh_for = dict(versions)


def ensure(engine: Engine, catalog: Catalog, known: Mapping[str, int] | None = None) -> None:
    """Make the network when it is stale; one process makes it, the others wait for it and use it.

    ``known``: the layer versions as the server's listener last heard them; when the sources' are those the
    network was last found made from, nothing is asked of the database.
    """
    if fresh(catalog, known):
        return
    with engine.connect() as conn:
        if not stale(conn, catalog):
            _remember(_versions(conn, sources(catalog)))
            return
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": BUILD_LOCK})
        if stale(conn, catalog):  # not made meanwhile by another process
            conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            made = build(conn, catalog)
            _remember(made["sources"])


# -- network check -----------------------------------------------------------------------------------


def check(conn: Connection, catalog: Catalog) -> dict[str, Any]:
    """The network's parts (connected components), its dangling ends, and the facilities it does not reach.

    Dangling ends that lie on another road's line (under or over it: another grade level, and no vertex shared)
    are counted apart: a ramp drawn that way is not joined.

    A facility is unreachable when the road nearest it lies outside the largest part, or no road is within
    the off-road limit.
    """
    net = settings_of(sources(catalog, conn))
    parts = conn.execute(sa.text(
        "SELECT component, count(*) AS vertices FROM pgr_connectedComponents("
        f"{_literal('SELECT id, source, target, cost, reverse_cost FROM network_edges')}) GROUP BY 1 "
        "ORDER BY 2 DESC, 1")).mappings().all()
    main = parts[0]["component"] if parts else None
    # one-way roads can make places one may leave and never reach (or the other way): outside the largest
    # strongly connected part
    strong = conn.execute(sa.text(
        "WITH s AS (SELECT * FROM pgr_strongComponents("
        f"{_literal('SELECT id, source, target, cost, reverse_cost FROM network_edges')})) "
        "SELECT count(*) FILTER (WHERE component <> (SELECT component FROM s GROUP BY 1 ORDER BY count(*) DESC "
        "LIMIT 1)) FROM s")).scalar()
    # a dead end on another road's line is one under or over it (another grade level): they meet only where
    # both lines have a vertex (add one to make a ramp's junction)
    dangling = conn.execute(sa.text(
        "SELECT v.id, ST_X(v.geom) AS lon, ST_Y(v.geom) AS lat, EXISTS (SELECT 1 FROM network_edges o WHERE "
        "ST_DWithin(o.geom, v.geom, 1e-9) AND v.id NOT IN (o.source, o.target)) AS on_other "
        "FROM network_vertices v WHERE "
        "(SELECT count(*) FROM network_edges e WHERE e.source = v.id OR e.target = v.id) = 1 ORDER BY v.id")).all()
    crossing = [d for d in dangling if d.on_other]
    facilities = conn.execute(sa.text(
        "WITH c AS (SELECT * FROM pgr_connectedComponents("
        f"{_literal('SELECT id, source, target, cost, reverse_cost FROM network_edges')})) "
        "SELECT f.id, f.kind, f.name, n.off_m, (SELECT component FROM c WHERE c.node = n.source) AS part "
        "FROM infrastructure f CROSS JOIN LATERAL (SELECT ST_PointOnSurface(f.geom) AS p) s "
        "CROSS JOIN LATERAL (SELECT e.source, ST_Distance(s.p::geography, e.geom::geography) AS off_m "
        "FROM network_edges e ORDER BY e.geom <-> s.p LIMIT 1) n "
        "WHERE f.kind NOT IN ('road', 'river') AND ST_Dimension(f.geom) = 0 ORDER BY f.id")).mappings().all()
    unreachable = [{"id": f["id"], "kind": f["kind"], "name": f["name"], "off_road_m": round(f["off_m"], 1),
                    "why": "far from every road" if f["off_m"] > net.max_off_road_m else
                    "on a part apart from the rest"}
                   for f in facilities if f["off_m"] > net.max_off_road_m or f["part"] != main]
    state = conn.execute(sa.text(
        "SELECT built_at, edges, vertices, build_seconds FROM network_state")).mappings().first()
    return {"built_at": state["built_at"].isoformat() if state else None, "edges": state["edges"] if state else 0,
            "vertices": state["vertices"] if state else 0,
            "parts": [{"part": i + 1, "vertices": p["vertices"]} for i, p in enumerate(parts)],
            "one_way_traps": int(strong or 0),
            "dangling_ends": len(dangling), "dangling": [[round(d.lon, 6), round(d.lat, 6)] for d in dangling[:100]],
            "ends_on_other_levels": len(crossing),
            "ends_on_other_levels_at": [[round(d.lon, 6), round(d.lat, 6)] for d in crossing[:100]],
            "facilities_unreachable": unreachable}
