"""gis-ioc from Python (notebooks, scripts): the server's settings, layers as GeoDataFrames, the operations.

>>> import gis_ioc
>>> ws = gis_ioc.connect()                      # GIS_IOC_* settings, as the server reads them
>>> incidents = ws.layer("incidents", datetime="2026-09-01T00:00:00Z/..", severity="extreme")
>>> ws.stats("incidents", by="commune", window=ws.last(days=30))["units"][:3]
>>> ws.choropleth_map(level="commune", window="30d")        # a folium map, shown inline

Reads only: nothing here writes to the layers (operators use the API, with keys and an audit trail).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import folium
import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from shapely.geometry import shape
from sqlalchemy.engine import Connection, Engine

from gis_ioc import analysis, db, incident_view, maps, planning, queries
from gis_ioc.catalog import Catalog, quote_ident, quote_table
from gis_ioc.settings import Settings


class Workspace:
    """A connection to the layers through the same settings as the server (``GIS_IOC_*``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.settings = settings.model_copy(update={"database_url": db.database_url(settings)})
        self.engine: Engine = db.make_engine(self.settings.database_url or "", pool_size=2)
        db.migrate(self.engine, self.settings.migrations_dir)  # as the server does on start: idempotent
        self.catalog = Catalog.from_folder(self.settings.layers_dir, self.engine)

    # -- plumbing -----------------------------------------------------------------------------------

    def _conn(self) -> Connection:
        return self.engine.connect()

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def last(days: float = 0, hours: float = 0, until: datetime | None = None) -> analysis.Window:
        """A time window ending now (or at ``until``): ``ws.last(days=90)``."""
        end = until or datetime.now(UTC)
        return analysis.Window(end - timedelta(days=days, hours=hours), end)

    # -- layers ------------------------------------------------------------------------------------

    def layers(self) -> pd.DataFrame:
        """Every layer with its title and feature count."""
        with self._conn() as conn:
            rows = [{"id": layer.id, "title": layer.title, "features": count.value,
                     "estimated": count.estimated, "note": count.note}
                    for layer, count in self.catalog.counts(conn)]
        return pd.DataFrame(rows)

    def layer(self, layer_id: str, *, bbox: str | None = None, datetime: str | None = None,
              filter: str | None = None, **equals: Any) -> gpd.GeoDataFrame:
        """A layer's features as a GeoDataFrame (EPSG:4326), with the items filters.

        ``bbox="minlon,minlat,maxlon,maxlat"``, ``datetime="2026-01-01T00:00:00Z/.."``, ``filter=`` CQL2 text,
        and property values (``status="online"``). Bad values raise ``InvalidInput`` naming the parameter.
        """
        params: dict[str, str] = {k: str(v) for k, v in equals.items()}
        for name, value in (("bbox", bbox), ("datetime", datetime), ("filter", filter)):
            if value is not None:
                params[name] = value
        with self._conn() as conn:
            layer = self.catalog.get(layer_id, conn)
            req = queries.parse_items(layer, params)
            table = queries.table_of(layer)
            geom = table.c[layer.geometry.column]
            columns = [table.c[name] for name in layer.properties]
            statement = (sa.select(*columns, geom).where(*queries.conditions(layer, req, table))
                         .order_by(table.c[layer.id_column]))
            frame = gpd.read_postgis(statement, conn, geom_col=layer.geometry.column)
        return frame.rename_geometry("geometry") if layer.geometry.column != "geometry" else frame

    def time_range(self, layer_id: str) -> tuple[datetime | None, datetime | None]:
        """The first and last time of a layer's time column (analyses anchor their windows on the data)."""
        with self._conn() as conn:
            layer = self.catalog.get(layer_id, conn)
            if not layer.datetime_column:
                return None, None
            row = conn.execute(sa.text(
                f"SELECT min({quote_ident(layer.datetime_column)}), max({quote_ident(layer.datetime_column)}) "
                f"FROM {quote_table(layer.table)}")).one()
        return row[0], row[1]

    def units(self, level: str = "commune", at: date | None = None) -> gpd.GeoDataFrame:
        """Administrative units of a level in force on a date (default today)."""
        with self._conn() as conn:
            return gpd.read_postgis(sa.text(
                "SELECT code, name, unit_type, level, parent_code, valid_from, valid_to, geom FROM admin_units "
                f"WHERE level = :level AND {analysis.IN_FORCE} ORDER BY code"),
                conn, geom_col="geom", params={"level": level, "on": at or date.today()})

    def lineage(self) -> pd.DataFrame:
        """How old units became new ones in the 2025 reform (merged, split, renamed), with area shares."""
        with self._conn() as conn:
            return pd.read_sql(sa.text("SELECT * FROM admin_lineage ORDER BY old_code, new_code"), conn)

    # -- the spatial operations (the same code as /analysis and gis-ioc query) -------------------------

    def search(self, q: str, *, types: list[str] | None = None, near: tuple[float, float] | None = None,
               limit: int = 10) -> gpd.GeoDataFrame:
        """Places for what an operator types ("dak ha", "QL14", "bệnh viện Kon Tum", "14.35, 108.0"), best first."""
        from gis_ioc import search

        with self._conn() as conn:
            found = search.search(conn, q, kinds=types, near=near, limit=limit, region=self.settings.region_extent)
        rows = [{**{k: v for k, v in r.items() if k != "geometry"}, "geometry": shape(r["geometry"])}
                for r in found["results"]]
        return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326) if rows else gpd.GeoDataFrame(
            {"kind": [], "name": [], "score": []}, geometry=[], crs=4326)

    def locate(self, lon: float, lat: float, at: date | None = None) -> dict[str, Any]:
        """The units holding a point on a date."""
        with self._conn() as conn:
            return analysis.locate(conn, lon, lat, at)

    def nearest(self, layer_id: str, **kwargs: Any) -> gpd.GeoDataFrame:
        """The k nearest features (``lon=, lat=`` or ``incident=``, ``k=``, ``filter_text=``), with distance_m."""
        with self._conn() as conn:
            return _frame(analysis.nearest(conn, self.catalog, layer_id, **kwargs)["features"])

    def stats(self, layer_id: str, by: str = "commune", **kwargs: Any) -> dict[str, Any]:
        """Counts per unit (``window=``, ``at=``, ``breakdown=``, ``filter_text=``, ``through_lineage=``).

        ``archived=True`` counts the months archived out of the layer too.
        """
        with self._conn() as conn:
            return analysis.stats(conn, self.catalog, layer_id, by, **kwargs)

    def stats_frame(self, layer_id: str, by: str = "commune", **kwargs: Any) -> pd.DataFrame:
        """``stats`` as a table, one row per unit (breakdown values as columns)."""
        result = self.stats(layer_id, by, **kwargs)
        rows = [{k: v for k, v in u.items() if k != "breakdown"} | u.get("breakdown", {}) for u in result["units"]]
        return pd.DataFrame(rows).fillna(0)

    def coverage(self, admin_code: str | None = None, *, polygon: str | None = None, online_only: bool = False,
                 by: str | None = None, at: date | None = None) -> dict[str, Any]:
        """Covered share of an area by camera fields of view (geodesic), the gaps, and per unit."""
        with self._conn() as conn:
            area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, at=at)
            return analysis.coverage(conn, area, online_only=online_only, by=by, at=at)

    def fields_of_view(self, status: str | None = None) -> gpd.GeoDataFrame:
        """Every camera's field-of-view sector as a polygon."""
        with self._conn() as conn:
            return _frame(analysis.fov_layer(conn, status=status, limit=50_000))

    def impact(self, **kwargs: Any) -> dict[str, Any]:
        """What an incident (``incident=``) or an area (``polygon=``) reaches within ``radius_m``."""
        with self._conn() as conn:
            return analysis.impact(conn, self.catalog, **kwargs)

    def hotspots(self, layer_id: str = "incidents", **kwargs: Any) -> gpd.GeoDataFrame:
        """Hotspots (``method=dbscan|grid|h3``, ``window=``…) with count, centroid and hull, largest first."""
        with self._conn() as conn:
            result = analysis.hotspots(conn, self.catalog, layer_id, **kwargs)
        features = [{"type": "Feature", "geometry": c["hull"],
                     "properties": {"rank": c["rank"], "count": c["count"], "cell": c["cell"],
                                    "centroid_lon": c["centroid"]["coordinates"][0],
                                    "centroid_lat": c["centroid"]["coordinates"][1]}} for c in result["clusters"]]
        return _frame(features)

    # -- by road (pgRouting) -----------------------------------------------------------------------------

    def route(self, start: tuple[float, float], end: tuple[float, float],
              via: list[tuple[float, float]] | None = None) -> dict[str, Any]:
        """The fastest way by road (a GeoJSON Feature: length, time, steps); the network made first if stale."""
        from gis_ioc import routing

        routing.ensure(self.engine, self.catalog)
        with self._conn() as conn:
            return routing.route(conn, self.catalog, start, end, via)

    def nearest_by_time(self, layer_id: str = "infrastructure", **kwargs: Any) -> gpd.GeoDataFrame:
        """The k features (``filter_text=``) soonest at a point (``lon=, lat=``) or ``incident=`` by road."""
        from gis_ioc import routing

        routing.ensure(self.engine, self.catalog)
        with self._conn() as conn:
            return _frame(routing.nearest_by_time(conn, self.catalog, layer_id, **kwargs)["features"])

    def reach(self, layer_id: str = "infrastructure", **kwargs: Any) -> dict[str, Any]:
        """Areas reached by road within ``minutes=[…]`` from the features (``filter_text=``), commune shares."""
        from gis_ioc import routing, service_areas

        routing.ensure(self.engine, self.catalog)
        with self._conn() as conn:
            return service_areas.reach(conn, self.catalog, layer_id, **kwargs)

    def soonest_by_road(self, places: gpd.GeoSeries, layer_id: str = "infrastructure", *,
                        filter_text: str | None = None) -> pd.DataFrame:
        """For each place (points, CRS84 or any CRS), the feature soonest there by road and the minutes.

        Places farther than the off-road limit from every road get no answer (NaN); the features are compared
        in travel matrices of at most 2,500 pairs.
        """
        from gis_ioc import routing

        routing.ensure(self.engine, self.catalog)
        points = places.to_crs(4326) if places.crs is not None else places
        xy = [(float(g.x), float(g.y)) for g in points]
        answer = pd.DataFrame(index=places.index, data={"by_road": None, "by_road_minutes": float("nan")})
        with self._conn() as conn:
            net = routing.settings_of(routing.sources(self.catalog))
            _, found, on_road = routing.candidates_on_roads(conn, self.catalog, layer_id, filter_text, net)
            if not found:
                return answer
            kept: list[tuple[dict[str, Any], routing.OnRoad]] = [
                (r, on) for r, on in zip(found, on_road, strict=True) if on is not None]
            sites, names = [on for _, on in kept], [r["name"] or str(r["id"]) for r, _ in kept]
            # each place joined once, whatever the batch
            near = [(i, on) for i, on in enumerate(routing.join_some(conn, xy, net)) if on is not None]
            batch = max(1, routing.MAX_MATRIX // max(1, len(sites)))
            for start in range(0, len(near), batch):
                chosen = near[start:start + batch]
                seconds = routing.matrix_joined(conn, sites, [on for _, on in chosen], net)
                for j, (i, _) in enumerate(chosen):
                    options = [(t, n) for row, n in zip(seconds, names, strict=True) if (t := row[j]) is not None]
                    if options:
                        best, name = min(options)
                        answer.iat[i, 0], answer.iat[i, 1] = name, round(best / 60, 1)
        return answer

    # -- map views ---------------------------------------------------------------------------------------

    def wall_map(self, server: str = "http://127.0.0.1:8000") -> folium.Map:
        """The wall (its tiles and live changes come from a running server)."""
        with self._conn() as conn:
            return maps.wall(conn, self.catalog, self.settings, server=server, assets=maps.INLINE)

    def incident_map(self, incident_id: int) -> folium.Map:
        """One incident with its unit, nearest cameras and the infrastructure around it."""
        with self._conn() as conn:
            return incident_view.incident(conn, self.catalog, self.settings, incident_id, assets=maps.INLINE,
                                 server=None)

    def choropleth_map(self, **kwargs: Any) -> folium.Map:
        """Counts per unit in classes (``layer=``, ``level=``, ``window="30d"``, ``measure=``)."""
        with self._conn() as conn:
            return planning.choropleth(conn, self.catalog, self.settings, assets=maps.INLINE, **kwargs)


def _frame(features: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    if not features:
        return gpd.GeoDataFrame(geometry=[], crs=4326)
    frame = gpd.GeoDataFrame.from_features(features, crs=4326)
    frame.insert(0, "id", [f.get("id") for f in features])
    return frame


def connect(settings: Settings | None = None) -> Workspace:
    """A ``Workspace`` on the database the server uses (``GIS_IOC_DATABASE_URL`` or the private cluster)."""
    return Workspace(settings)
