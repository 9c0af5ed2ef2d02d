"""A synthetic but realistic Kon Tum province for demos, tests and benchmarks.

On the province of ``gis_ioc.demo_province`` (its towns, roads' corridors and administrative units), this makes
roads, infrastructure, cameras and incidents, and loads them. Everything is reproducible: the same seed, scale
and reference time give the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from pyproj import Geod
from shapely.geometry import LineString, Point, Polygon
from sqlalchemy.engine import Engine

from gis_ioc.catalog import Catalog
from gis_ioc.demo_province import (
    BO_Y_GATE,
    DISTRICTS,
    NATIONAL_ROADS,
    PROVINCIAL_ROADS,
    TOWN_WEIGHT,
    TOWNS,
    YALY_DAM,
    build_admin,
    city_streets,
    wiggle,
)
from gis_ioc.ingest import load_frame, prepare

DEFAULT_SEED = 62
GEOD = Geod(ellps="WGS84")
NOTE = (
    "Synthetic demo data from `gis-ioc demo` (seed {seed}, scale {scale}): boundaries are generated "
    "(Voronoi cells in a drawn outline), not surveyed; district names and GSO codes and commune names "
    "are real, commune codes are demo codes; cameras, infrastructure and incidents are simulated."
)

INCIDENT_TYPES = ["traffic_accident", "fire", "forest_fire", "flood", "landslide", "public_security", "medical",
                  "infrastructure_fault", "environment", "urban_order", "other"]
TYPE_TITLE = {
    "traffic_accident": "Tai nạn giao thông", "fire": "Cháy nhà dân", "forest_fire": "Cháy rừng",
    "flood": "Ngập lụt", "landslide": "Sạt lở đất", "public_security": "Gây rối trật tự công cộng",
    "medical": "Cấp cứu y tế", "infrastructure_fault": "Sự cố hạ tầng", "environment": "Ô nhiễm môi trường",
    "urban_order": "Vi phạm trật tự đô thị", "other": "Sự việc khác",
}
# Type weights by where the incident happens: town, road, countryside.
TYPE_WEIGHTS = {
    "town": [0.14, 0.08, 0.01, 0.03, 0.01, 0.20, 0.17, 0.07, 0.07, 0.18, 0.04],
    "road": [0.62, 0.03, 0.02, 0.03, 0.08, 0.06, 0.08, 0.04, 0.01, 0.01, 0.02],
    "rural": [0.08, 0.06, 0.26, 0.12, 0.16, 0.06, 0.08, 0.04, 0.08, 0.01, 0.05],
}
TYPE_SOURCE = {
    "traffic_accident": (["113", "camera", "app", "operator"], [0.45, 0.25, 0.2, 0.1]),
    "fire": (["114", "app", "camera"], [0.75, 0.15, 0.1]),
    "forest_fire": (["114", "operator", "app"], [0.6, 0.3, 0.1]),
    "medical": (["115", "app"], [0.85, 0.15]),
    "public_security": (["113", "camera", "app"], [0.6, 0.25, 0.15]),
}
SEVERITIES = ["extreme", "severe", "moderate", "minor", "unknown"]
SEVERITY_P = [0.03, 0.15, 0.35, 0.45, 0.02]
# Hour-of-day rhythm (local time): quiet nights, morning and late-afternoon peaks.
HOUR_WEIGHTS = np.array([1, 0.7, 0.5, 0.5, 0.6, 1.0, 2.0, 3.2, 3.4, 2.6, 2.3, 2.4,
                         2.2, 2.0, 2.2, 2.6, 3.2, 3.6, 3.3, 2.8, 2.3, 1.9, 1.5, 1.2])


@dataclass
class DemoData:
    """The generated layers, ready to load."""

    admin_units: gpd.GeoDataFrame
    lineage: pd.DataFrame
    infrastructure: gpd.GeoDataFrame
    cameras: gpd.GeoDataFrame
    incidents: gpd.GeoDataFrame


# -- roads, infrastructure, cameras, incidents ------------------------------------------------------


def build_roads(rng: np.random.Generator, outline: Polygon, communes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """National and provincial roads along their real corridors, and a district road to each commune."""
    rows = []
    for name, pts in NATIONAL_ROADS.items():  # through the towns exactly, so the roads meet there
        rows.append(dict(kind="road", name=name, road_class="national",
                         geometry=wiggle(pts, rng, 0.004, keep_waypoints=True)))
    for name, pts in PROVINCIAL_ROADS.items():
        rows.append(dict(kind="road", name=name, road_class="provincial",
                         geometry=wiggle(pts, rng, 0.005, keep_waypoints=True)))
    rows += city_streets(TOWNS["Kon Tum"])
    network = shapely.union_all([r["geometry"] for r in rows])
    for _, c in communes.iterrows():
        start = c.geometry.representative_point()
        end = shapely.ops.nearest_points(start, network)[1]
        if start.distance(end) > 0.01:
            rows.append(dict(kind="road", name=f"Đường xã {c['name']}", road_class="district",
                             geometry=wiggle([(start.x, start.y), (end.x, end.y)], rng, 0.003)))
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    frame["geometry"] = frame.geometry.intersection(outline)
    return frame[~frame.geometry.is_empty].reset_index(drop=True)


def _jitter(xy: tuple[float, float], rng: np.random.Generator, sd: float = 0.004) -> Point:
    return Point(xy[0] + rng.normal(0, sd), xy[1] + rng.normal(0, sd))


def build_infrastructure(rng: np.random.Generator, admin: gpd.GeoDataFrame, roads: gpd.GeoDataFrame,
                         scale: float) -> gpd.GeoDataFrame:
    """Hospitals, police, fire stations, schools, bridges, the border gate, dams…, plus the roads."""
    rows: list[dict] = []
    city = TOWNS["Kon Tum"]

    def add(kind: str, name: str, geom: shapely.Geometry, **extra: object) -> None:
        rows.append(dict(kind=kind, name=name, geometry=geom, status="operational", **extra))

    add("hospital", "Bệnh viện Đa khoa tỉnh Kon Tum", _jitter(city, rng, 0.002), capacity=1000,
        operator="Sở Y tế", contact="0260 3862 470")
    add("hospital", "Bệnh viện Nhi tỉnh Kon Tum", _jitter(city, rng, 0.01), capacity=300, operator="Sở Y tế")
    add("hospital", "Bệnh viện Y dược cổ truyền - Phục hồi chức năng", _jitter(city, rng, 0.01), capacity=200,
        operator="Sở Y tế")
    add("government_office", "UBND tỉnh Kon Tum", _jitter(city, rng, 0.002), operator="UBND tỉnh")
    add("police", "Công an tỉnh Kon Tum", _jitter(city, rng, 0.003), operator="Công an tỉnh", contact="113")
    add("fire_station", "Phòng Cảnh sát PCCC và CNCH", _jitter(city, rng, 0.004), operator="Công an tỉnh",
        contact="114")
    add("water_plant", "Nhà máy nước Kon Tum", _jitter(city, rng, 0.01), capacity=30000)
    add("substation", "Trạm biến áp 220kV Kon Tum", _jitter(city, rng, 0.02), capacity=250)
    add("border_gate", "Cửa khẩu Quốc tế Bờ Y", Point(BO_Y_GATE), operator="Bộ đội Biên phòng")
    for name, xy, mw in (("Thủy điện Ialy", YALY_DAM, 720), ("Thủy điện Plei Krông", (107.865, 14.405), 100),
                         ("Thủy điện Thượng Kon Tum", (108.34, 14.70), 220),
                         ("Thủy điện Đắk Đrinh", (108.25, 14.86), 125)):
        add("hydropower", name, Point(xy), capacity=mw, operator="EVN")
        # the reservoir upstream of the dam
        lake = Point(xy[0] - 0.03, xy[1] + 0.035).buffer(0.03).intersection(Point(xy).buffer(0.07))
        add("reservoir", f"Hồ {name.removeprefix('Thủy điện ')}", lake)
    for d in DISTRICTS:
        seat = TOWNS[d.seat]
        if d.code != "608":
            add("hospital", f"Trung tâm Y tế {d.unit_type} {d.name}", _jitter(seat, rng), capacity=120,
                operator="Sở Y tế")
            add("government_office", f"UBND {d.unit_type} {d.name}", _jitter(seat, rng, 0.002))
        add("police", f"Công an {d.unit_type} {d.name}", _jitter(seat, rng, 0.003), contact="113")
        if d.code in ("611", "615", "613", "616", "610"):
            add("fire_station", f"Đội Cảnh sát PCCC và CNCH khu vực {d.seat}", _jitter(seat, rng), contact="114")
        add("substation", f"Trạm biến áp 110kV {d.seat}", _jitter(seat, rng, 0.01), capacity=40)
    outline = admin[(admin.level == "province") & admin.valid_to.isna()].geometry.iloc[0]
    border = outline.boundary
    for i, lat in enumerate((14.30, 14.55, 14.80, 15.05, 15.25)):
        west = shapely.ops.nearest_points(Point(107.3, lat), border)[1]
        add("border_post", f"Đồn Biên phòng {i + 1}", Point(west.x + 0.03, west.y), operator="Bộ đội Biên phòng")
    communes = admin[(admin.level == "commune") & (admin.valid_to.notna())]
    schools_per_commune = max(1, round(2 * min(scale, 5)))
    for _, c in communes.iterrows():
        centre = c.geometry.representative_point()
        add("health_station", f"Trạm Y tế {c.unit_type} {c['name']}", _jitter((centre.x, centre.y), rng, 0.003),
            capacity=10)
        for k in range(schools_per_commune):
            level = ("Trường Tiểu học", "Trường THCS", "Trường Mầm non")[k % 3]
            add("school", f"{level} {c['name']}", _jitter((centre.x, centre.y), rng, 0.006),
                capacity=int(rng.integers(150, 900)))
        if rng.random() < 0.25:
            add("shelter", f"Điểm sơ tán {c['name']}", _jitter((centre.x, centre.y), rng, 0.004),
                capacity=int(rng.integers(100, 600)))
    for _, road in roads[roads.road_class.isin(["national", "provincial"])].iterrows():
        for f in (0.2, 0.45, 0.7, 0.9):
            p = road.geometry.interpolate(f, normalized=True)
            add("bridge", f"Cầu {road['name']} km{int(f * road.geometry.length * 111)}", p)
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    return pd.concat([frame, roads.assign(status="operational"), _tracks(frame, roads), build_rivers(outline)],
                     ignore_index=True)


def _tracks(facilities: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, farther: float = 0.005) -> gpd.GeoDataFrame:
    """A track from each facility more than ``farther`` (about 550 m) from every road to the nearest one."""
    network = shapely.union_all(list(roads.geometry))
    rows = []
    for _, f in facilities.iterrows():
        if f.geometry.geom_type != "Point" or f.geometry.distance(network) <= farther:
            continue
        end = shapely.ops.nearest_points(f.geometry, network)[1]
        rows.append(dict(kind="road", name=f"Đường vào {f['name']}", road_class="track", status="operational",
                         geometry=LineString([(f.geometry.x, f.geometry.y), (end.x, end.y)])))
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326) if rows else gpd.GeoDataFrame(
        columns=["kind", "name", "road_class", "status", "geometry"], geometry="geometry", crs=4326)


# The main rivers along their real courses (waypoints; drawn, not surveyed): the wall stands on them
# when it has no basemap. Their own random stream, so the rest of the demo does not move.
RIVERS = {
    "Sông Pô Kô": [(107.70, 15.20), (107.74, 15.05), (107.80, 14.86), (107.83, 14.70), (107.80, 14.55),
                   (107.76, 14.40), (107.74, 14.26)],
    "Sông Đắk Bla": [(108.35, 14.78), (108.25, 14.70), (108.17, 14.56), (108.08, 14.42), (108.00, 14.355),
                     (107.90, 14.33), (107.80, 14.28), (107.74, 14.26)],
    "Sông Sê San": [(107.74, 14.26), (107.65, 14.20), (107.55, 14.14), (107.42, 14.08)],
    "Sông Đắk Psi": [(107.98, 14.90), (107.93, 14.78), (107.88, 14.70), (107.83, 14.69)],
}


def build_rivers(outline: Polygon) -> gpd.GeoDataFrame:
    """The main rivers as lines inside the province (infrastructure kind ``river``)."""
    rng = np.random.default_rng(9216)
    rows = [dict(kind="river", name=name, status="natural", geometry=wiggle(pts, rng, 0.006))
            for name, pts in RIVERS.items()]
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    frame["geometry"] = frame.geometry.intersection(outline)
    return frame[~frame.geometry.is_empty].reset_index(drop=True)


def _points_along(lines: list[LineString], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """N points on the lines (chosen by length), and the bearing of the line at each, in degrees."""
    lengths = np.array([ln.length for ln in lines])
    which = rng.choice(len(lines), size=n, p=lengths / lengths.sum())
    frac = rng.random(n)
    pts = np.empty(n, dtype=object)
    bearing = np.empty(n)
    for k in np.unique(which):
        idx = np.flatnonzero(which == k)
        line = lines[k]
        a = shapely.line_interpolate_point(line, frac[idx], normalized=True)
        b = shapely.line_interpolate_point(line, np.minimum(frac[idx] + 0.002, 1.0), normalized=True)
        pts[idx] = a
        bearing[idx] = np.degrees(np.arctan2(shapely.get_x(b) - shapely.get_x(a),
                                             shapely.get_y(b) - shapely.get_y(a))) % 360
    return pts, bearing


def _spread(n: int, rng: np.random.Generator, outline: Polygon, roads: list[LineString],
            shares: tuple[float, float, float], town_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N points: a share around towns, along national roads and spread over the province.

    Returns points, the setting of each (0 town, 1 road, 2 rural) and a bearing for road points.
    """
    counts = rng.multinomial(n, shares)
    names = list(TOWN_WEIGHT)
    towns = rng.choice(len(names), size=counts[0], p=np.array(list(TOWN_WEIGHT.values())))
    centre = np.array([TOWNS[names[t]] for t in towns]).reshape(-1, 2)
    radius = np.abs(rng.normal(0, town_sd, counts[0])) * np.where(towns == 0, 1.6, 1.0)
    angle = rng.uniform(0, 2 * np.pi, counts[0])
    town_xy = centre + np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    road_pts, road_bearing = _points_along(roads, counts[1], rng)
    road_xy = np.empty((0, 2))
    if counts[1]:
        road_xy = shapely.get_coordinates(road_pts) + rng.normal(0, 0.0003, (counts[1], 2))
    xmin, ymin, xmax, ymax = outline.bounds
    rural: list[np.ndarray] = []
    while sum(len(r) for r in rural) < counts[2]:
        cand = np.column_stack([rng.uniform(xmin, xmax, counts[2] * 2), rng.uniform(ymin, ymax, counts[2] * 2)])
        rural.append(cand[shapely.contains_xy(outline, cand[:, 0], cand[:, 1])])
    rural_xy = np.concatenate(rural)[: counts[2]] if counts[2] else np.empty((0, 2))
    xy = np.concatenate([town_xy, road_xy, rural_xy])
    # anything pushed outside the outline by the spread goes back to its town or road point
    inside = shapely.contains_xy(outline, xy[:, 0], xy[:, 1])
    fallback = np.concatenate([centre, shapely.get_coordinates(road_pts).reshape(-1, 2), rural_xy])
    xy[~inside] = fallback[~inside]
    setting = np.repeat([0, 1, 2], counts)
    bearing = np.concatenate([np.zeros(counts[0]), road_bearing, np.zeros(counts[2])])
    order = rng.permutation(n)
    return shapely.points(xy[order]), setting[order], bearing[order]


def build_cameras(rng: np.random.Generator, n: int, outline: Polygon, roads: gpd.GeoDataFrame,
                  ref_time: datetime) -> gpd.GeoDataFrame:
    """Cameras clustered in towns (55 %) and along the national roads (40 %), a few elsewhere."""
    national = list(roads[roads.road_class == "national"].geometry)
    pts, setting, bearing = _spread(n, rng, outline, national, (0.55, 0.40, 0.05), 0.012)
    kind = np.where(setting == 1, rng.choice(["fixed", "anpr", "ptz"], n, p=[0.45, 0.35, 0.20]),
                    rng.choice(["fixed", "ptz", "dome", "anpr"], n, p=[0.45, 0.25, 0.25, 0.05]))
    heading = np.where(setting == 1, (bearing + rng.choice([0, 180], n)) % 360, rng.uniform(0, 360, n))
    fov = np.select([kind == "dome", kind == "anpr", kind == "ptz"], [360.0, 30.0, 60.0], rng.uniform(60, 95, n))
    range_m = np.select([kind == "dome", kind == "anpr", kind == "ptz"],
                        [rng.uniform(30, 60, n), rng.uniform(25, 50, n), rng.uniform(150, 400, n)],
                        rng.uniform(60, 150, n))
    status = rng.choice(["online", "offline", "maintenance"], n, p=[0.86, 0.09, 0.05])
    age_min = np.where(status == "online", rng.uniform(0, 5, n), rng.uniform(60, 60 * 24 * 7, n))
    last_seen = pd.Timestamp(ref_time) - pd.to_timedelta(age_min, unit="min")
    where = np.select([setting == 0, setting == 1], ["Nội thị", "Quốc lộ"], "Vùng ven")
    operator = np.where(setting == 1, "Công an tỉnh Kon Tum",
                        rng.choice(["Công an tỉnh Kon Tum", "Sở Thông tin và Truyền thông", "UBND cấp xã"], n))
    ids = np.arange(1, n + 1)
    return gpd.GeoDataFrame(
        {
            "id": ids,
            "name": [f"CAM-{i:05d} {w}" for i, w in zip(ids, where, strict=True)],
            "heading_deg": np.round(heading, 1) % 360,
            "fov_deg": np.round(fov, 1),
            "range_m": np.round(range_m, 0),
            "mount_height_m": np.round(rng.uniform(4, 12, n), 1),
            "camera_type": kind,
            "status": status,
            "last_seen_at": last_seen,
            "stream_url": [f"rtsp://cctv.kontum.local/cam/{i:05d}" for i in ids],
            "operator": operator,
            "zone": where,
        },
        geometry=pts,
        crs=4326,
    )


def build_incidents(rng: np.random.Generator, n: int, outline: Polygon, roads: gpd.GeoDataFrame,
                    admin: gpd.GeoDataFrame, ref_time: datetime) -> gpd.GeoDataFrame:
    """Incidents of the last 90 days (85 %) and of spring 2025, before the reform (15 %).

    They follow a daily rhythm, cluster in towns and on roads; floods and forest fires are often areas.
    """
    lines = list(roads[roads.road_class != "district"].geometry)
    pts, setting, _ = _spread(n, rng, outline, lines, (0.65, 0.25, 0.10), 0.02)
    type_idx = np.empty(n, dtype=int)
    for s, key in enumerate(("town", "road", "rural")):
        mask = setting == s
        type_idx[mask] = rng.choice(len(INCIDENT_TYPES), mask.sum(), p=TYPE_WEIGHTS[key])
    types = np.array(INCIDENT_TYPES)[type_idx]
    # when: a day, then an hour by the daily rhythm, in local time
    historic = rng.random(n) < 0.15
    ref_local = pd.Timestamp(ref_time).tz_convert("Asia/Ho_Chi_Minh")
    day_recent = rng.integers(0, 90, n)
    day_hist = rng.integers(0, (pd.Timestamp("2025-07-01", tz="Asia/Ho_Chi_Minh") -
                                pd.Timestamp("2025-03-01", tz="Asia/Ho_Chi_Minh")).days, n)
    hours = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    minutes = rng.uniform(0, 60, n)
    base_recent = ref_local.normalize() - pd.to_timedelta(day_recent, unit="D")
    base_hist = pd.Timestamp("2025-03-01", tz="Asia/Ho_Chi_Minh") + pd.to_timedelta(day_hist, unit="D")
    reported = pd.DatetimeIndex(np.where(historic, base_hist.values, base_recent.values)).tz_localize("UTC")
    reported = reported.tz_convert("Asia/Ho_Chi_Minh") + pd.to_timedelta(hours * 60 + minutes, unit="min")
    reported = reported.where(reported <= ref_local, ref_local - pd.to_timedelta(rng.uniform(1, 600, n), unit="min"))
    age_h = np.asarray((ref_local - reported) / pd.Timedelta(hours=1))
    severity = rng.choice(SEVERITIES, n, p=SEVERITY_P)
    # lifecycle by age: fresh incidents are open, older ones resolved or closed
    status = np.where(
        age_h < 2, rng.choice(["new", "verified", "dispatched", "in_progress"], n, p=[0.35, 0.25, 0.2, 0.2]),
        np.where(age_h < 24, rng.choice(["in_progress", "resolved", "dispatched", "rejected"], n,
                                        p=[0.3, 0.5, 0.1, 0.1]),
                 rng.choice(["closed", "resolved", "rejected", "reopened"], n, p=[0.8, 0.1, 0.08, 0.02])))
    # reopened within two weeks of the report; a reopened incident is active again (the API clears its stamps)
    status = np.where((status == "reopened") & (age_h > 14 * 24), "closed", status)
    minutes_after = pd.to_timedelta
    verified = reported + minutes_after(rng.uniform(3, 30, n), unit="min")
    dispatched = verified + minutes_after(rng.uniform(2, 20, n), unit="min")
    resolved = dispatched + minutes_after(rng.uniform(30, 600, n), unit="min")
    closed = resolved + minutes_after(rng.uniform(60, 60 * 48, n), unit="min")
    has_verified = ~np.isin(status, ["new"])
    has_dispatched = np.isin(status, ["dispatched", "in_progress", "resolved", "closed", "reopened"])
    has_resolved = np.isin(status, ["resolved", "closed"])
    has_closed = np.isin(status, ["closed"])

    def stamp(values: pd.DatetimeIndex, mask: np.ndarray) -> pd.Series:
        values = values.where(values <= ref_local, ref_local)
        return pd.Series(values.tz_convert("UTC")).where(mask, pd.NaT)

    source = np.array(rng.choice(["1022", "113", "app", "operator"], n, p=[0.35, 0.25, 0.25, 0.15]), dtype=object)
    for t, (choices, p) in TYPE_SOURCE.items():
        mask = types == t
        source[mask] = rng.choice(choices, mask.sum(), p=p)
    # areas: about 40 % of floods and forest fires
    geoms = np.asarray(pts, dtype=object)
    area = np.isin(types, ["flood", "forest_fire"]) & (rng.random(n) < 0.4)
    if area.any():
        radius = rng.uniform(0.001, 0.007, area.sum())
        blobs = shapely.buffer(geoms[area], radius, quad_segs=4)
        geoms[area] = shapely.intersection(blobs, outline)
    # the commune at report time: the post-reform units for recent incidents, the old ones before
    communes = admin[admin.level == "commune"]
    anchor = shapely.point_on_surface(geoms)
    commune_code = np.full(n, None, dtype=object)
    commune_name = np.full(n, "", dtype=object)
    for old in (True, False):
        units = communes[communes.valid_to.notna() if old else communes.valid_to.isna()]
        mask = historic if old else ~historic
        tree = shapely.STRtree(units.geometry.values)
        idx_pt, idx_unit = tree.query(anchor[mask], predicate="intersects")
        rows = np.flatnonzero(mask)[idx_pt]
        commune_code[rows] = units.code.values[idx_unit]
        commune_name[rows] = units.name.values[idx_unit]
    titles = [f"{TYPE_TITLE[t]} tại {c}" if c else TYPE_TITLE[t] for t, c in zip(types, commune_name, strict=True)]
    order = np.argsort(np.asarray(reported), kind="stable")
    frame = gpd.GeoDataFrame(
        {
            "type": types,
            "severity": severity,
            "status": status,
            "reported_at": pd.Series(reported.tz_convert("UTC")),
            "verified_at": stamp(verified, has_verified),
            "dispatched_at": stamp(dispatched, has_dispatched),
            "resolved_at": stamp(resolved, has_resolved),
            "closed_at": stamp(closed, has_closed),
            "source": source,
            "title": titles,
            "commune_code": commune_code,
        },
        geometry=geoms,
        crs=4326,
    ).iloc[order].reset_index(drop=True)
    frame.insert(0, "id", np.arange(1, n + 1))
    return frame


def generate(scale: float = 1.0, seed: int = DEFAULT_SEED, ref_time: datetime | None = None) -> DemoData:
    """Generate the demo province: ``scale`` 1 is 200 cameras and 10,000 incidents."""
    ref_time = (ref_time or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(seed)
    admin, lineage = build_admin(rng)
    outline = admin[(admin.level == "province") & admin.valid_to.isna()].geometry.iloc[0]
    current = admin[(admin.level == "commune") & admin.valid_to.isna()]
    roads = build_roads(rng, outline, current)
    infrastructure = build_infrastructure(rng, admin, roads, scale)
    cameras = build_cameras(rng, max(1, round(200 * scale)), outline, roads, ref_time)
    incidents = build_incidents(rng, max(1, round(10_000 * scale)), outline, roads, admin, ref_time)
    return DemoData(admin, lineage, infrastructure, cameras, incidents)


def is_empty(engine: Engine) -> bool:
    """Whether any built-in layer has no rows (then ``make run`` loads the demo)."""
    with engine.connect() as conn:
        counts = [conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar()
                  for t in ("admin_units", "cameras", "incidents", "infrastructure")]
    return not all(counts)


def load_demo(
    engine: Engine,
    catalog: Catalog,
    scale: float = 1.0,
    seed: int = DEFAULT_SEED,
    ref_time: datetime | None = None,
    step: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Generate the demo and load it through the ingest path (replacing the built-in layers)."""
    started = time.perf_counter()
    data = generate(scale, seed, ref_time)
    loaded: dict[str, int] = {}
    for layer_id in ("admin_units", "infrastructure", "cameras", "incidents"):
        frame = getattr(data, layer_id)
        layer = catalog.get(layer_id)
        if step:
            step(layer_id, len(frame))
        prepared = prepare(frame, layer, ignore_unknown=False, source=f"demo {layer_id}")
        loaded[layer_id] = load_frame(engine, layer, prepared, "replace", cascade=True)  # lineage follows below
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM admin_lineage"))
        conn.execute(
            sa.text(
                "INSERT INTO admin_lineage (old_code, old_valid_from, new_code, new_valid_from, effective_date, "
                "relation, area_share) VALUES (:old_code, :old_valid_from, :new_code, :new_valid_from, "
                ":effective_date, :relation, :area_share)"
            ),
            [{str(k): v for k, v in row.items()} for row in data.lineage.to_dict("records")],
        )
        note = NOTE.format(seed=seed, scale=scale)
        for layer_id in loaded:
            conn.execute(
                sa.text("INSERT INTO layer_notes (layer_id, source, note) VALUES (:l, 'demo', :n) "
                        "ON CONFLICT (layer_id) DO UPDATE SET source = 'demo', note = :n, updated_at = now()"),
                {"l": layer_id, "n": note},
            )
    loaded["admin_lineage"] = len(data.lineage)
    loaded["seconds"] = round(time.perf_counter() - started, 1)  # type: ignore[assignment]
    return loaded
