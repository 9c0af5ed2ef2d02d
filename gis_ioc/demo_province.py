"""The demo province's geography, and its administrative units before and after the 2025 reform.

Towns, outline, districts and communes, road corridors and city streets; ``gis_ioc.demo`` makes the rest of the
demo on them.

District names and GSO codes, commune names, town positions and road corridors are real; the boundaries are
generated (Voronoi cells clipped to a drawn province outline), not surveyed, and commune codes are demo codes in
the GSO format.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

REFORM_DATE = date(2025, 7, 1)
PROVINCE_CODE, PROVINCE_NAME = "62", "Kon Tum"
NEW_PROVINCE_CODE, NEW_PROVINCE_NAME = "51", "Quảng Ngãi"
OLD_VALID_FROM = date(2008, 1, 1)

TOWNS: dict[str, tuple[float, float]] = {
    "Kon Tum": (108.003, 14.350),
    "Plei Kần": (107.698, 14.704),
    "Sa Thầy": (107.796, 14.402),
    "Măng Đen": (108.309, 14.594),
    "Đắk Tô": (107.817, 14.661),
    "Đắk Hà": (107.935, 14.517),
    "Đắk Rve": (108.250, 14.543),
    "Đắk Glei": (107.752, 15.032),
    "Tu Mơ Rông": (107.941, 14.792),
    "Ia H'Drai": (107.530, 14.110),
}
TOWN_WEIGHT = {"Kon Tum": 0.42, "Plei Kần": 0.09, "Đắk Hà": 0.08, "Đắk Tô": 0.08, "Sa Thầy": 0.06,
               "Măng Đen": 0.08, "Đắk Rve": 0.05, "Đắk Glei": 0.06, "Tu Mơ Rông": 0.04, "Ia H'Drai": 0.04}
BO_Y_GATE = (107.562, 14.705)
PROVINCE_BBOX = (107.33, 13.92, 108.55, 15.42)
YALY_DAM = (107.829, 14.227)

# A drawn outline of the province inside its bbox (107.33–108.55 E, 13.92–15.42 N).
OUTLINE = [
    (107.78, 15.42), (107.92, 15.36), (107.98, 15.20), (108.10, 15.06), (108.25, 14.98), (108.45, 14.90),
    (108.55, 14.72), (108.50, 14.55), (108.40, 14.42), (108.30, 14.30), (108.20, 14.22), (108.08, 14.17),
    (107.95, 14.14), (107.80, 14.04), (107.72, 13.92), (107.55, 13.95), (107.42, 14.05), (107.33, 14.20),
    (107.40, 14.40), (107.48, 14.55), (107.52, 14.70), (107.49, 14.85), (107.55, 15.00), (107.50, 15.15),
    (107.60, 15.30), (107.70, 15.40),
]


@dataclass(frozen=True)
class District:
    """A pre-2025 district: GSO code, name, type, where its cell is grown from, its seat, its communes."""

    code: str
    name: str
    unit_type: str
    centre: tuple[float, float]
    seat: str
    communes: tuple[tuple[str, str], ...]  # (unit type, name); the first is at the seat


def _xa(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple(("xã", n) for n in names)


DISTRICTS = (
    District("608", "Kon Tum", "thành phố", (108.02, 14.36), "Kon Tum",
             (("phường", "Quyết Thắng"),) + tuple(("phường", n) for n in (
                 "Thắng Lợi", "Thống Nhất", "Quang Trung", "Duy Tân", "Lê Lợi", "Trường Chinh", "Nguyễn Trãi",
                 "Ngô Mây", "Trần Hưng Đạo"))
             + _xa("Đắk Cấm", "Đắk Blà", "Ia Chim", "Đắk Năng", "Đoàn Kết", "Chư Hreng", "Đắk Rơ Wa", "Hòa Bình",
                   "Kroong", "Ngọk Bay", "Vinh Quang")),
    District("610", "Đắk Glei", "huyện", (107.75, 15.15), "Đắk Glei",
             (("thị trấn", "Đắk Glei"),) + _xa("Đắk Pek", "Đắk Man", "Đắk Nhoong", "Đắk Long", "Đắk Choong", "Xốp",
                                               "Mường Hoong", "Ngọc Linh", "Đắk Plô", "Đắk Môn", "Đắk Kroong")),
    District("611", "Ngọc Hồi", "huyện", (107.62, 14.72), "Plei Kần",
             (("thị trấn", "Plei Kần"),) + _xa("Đắk Ang", "Đắk Dục", "Đắk Nông", "Đắk Xú", "Bờ Y", "Sa Loong",
                                               "Đắk Kan")),
    District("612", "Đắk Tô", "huyện", (107.83, 14.66), "Đắk Tô",
             (("thị trấn", "Đắk Tô"),) + _xa("Đắk Rơ Nga", "Ngọk Tụ", "Đắk Trăm", "Văn Lem", "Kon Đào", "Tân Cảnh",
                                             "Diên Bình", "Pô Kô")),
    District("613", "Kon Plông", "huyện", (108.33, 14.70), "Măng Đen",
             (("thị trấn", "Măng Đen"),) + _xa("Đắk Long", "Đắk Nên", "Đắk Ring", "Măng Buk", "Đắk Tăng", "Ngọk Tem",
                                               "Pờ Ê", "Hiếu")),
    District("614", "Kon Rẫy", "huyện", (108.22, 14.45), "Đắk Rve",
             (("thị trấn", "Đắk Rve"),) + _xa("Đắk Kôi", "Đắk Tơ Lung", "Đắk Ruồng", "Đắk Pne", "Đắk Tờ Re",
                                              "Tân Lập")),
    District("615", "Đắk Hà", "huyện", (107.98, 14.56), "Đắk Hà",
             (("thị trấn", "Đắk Hà"),) + _xa("Đắk Pxi", "Đắk Long", "Đắk HRing", "Đắk Ui", "Đắk Ngọk", "Đắk Mar",
                                             "Ngọk Wang", "Ngọk Réo", "Hà Mòn", "Đắk La")),
    District("616", "Sa Thầy", "huyện", (107.68, 14.42), "Sa Thầy",
             (("thị trấn", "Sa Thầy"),) + _xa("Rờ Kơi", "Sa Nhơn", "Hơ Moong", "Mô Rai", "Sa Sơn", "Sa Nghĩa",
                                              "Sa Bình", "Ya Xiêr", "Ya Tăng", "Ya Ly")),
    District("617", "Tu Mơ Rông", "huyện", (107.98, 14.85), "Tu Mơ Rông",
             _xa("Đắk Hà", "Tu Mơ Rông", "Đắk Sao", "Đắk Na", "Đắk Rơ Ông", "Đắk Tờ Kan", "Măng Ri", "Ngọk Yêu",
                 "Ngọk Lây", "Tê Xăng", "Văn Xuôi")),
    District("618", "Ia H'Drai", "huyện", (107.58, 14.10), "Ia H'Drai", _xa("Ia Đal", "Ia Dom", "Ia Tơi")),
)

NATIONAL_ROADS = {
    "QL14": [(108.06, 14.19), (108.04, 14.28), TOWNS["Kon Tum"], (107.97, 14.44), TOWNS["Đắk Hà"], (107.87, 14.60),
             TOWNS["Đắk Tô"], (107.75, 14.69), TOWNS["Plei Kần"], (107.72, 14.80), (107.74, 14.93), TOWNS["Đắk Glei"],
             (107.78, 15.20), (107.80, 15.38)],
    "QL24": [TOWNS["Kon Tum"], (108.10, 14.42), (108.19, 14.50), TOWNS["Đắk Rve"], TOWNS["Măng Đen"],
             (108.40, 14.70), (108.50, 14.76)],
    "QL40": [TOWNS["Plei Kần"], (107.64, 14.71), BO_Y_GATE],
    "QL40B": [TOWNS["Đắk Tô"], (107.88, 14.73), TOWNS["Tu Mơ Rông"], (108.05, 14.93), (108.15, 15.02)],
}
PROVINCIAL_ROADS = {
    "ĐT671": [TOWNS["Kon Tum"], (107.90, 14.38), TOWNS["Sa Thầy"]],
    "ĐT675": [TOWNS["Sa Thầy"], (107.70, 14.28), YALY_DAM, (107.62, 14.16), TOWNS["Ia H'Drai"]],
    "ĐT676": [TOWNS["Măng Đen"], (108.20, 14.68), (108.05, 14.76), TOWNS["Tu Mơ Rông"]],
    "ĐT673": [TOWNS["Đắk Glei"], (107.88, 15.08), (107.96, 15.20)],
}


# -- geometry helpers --------------------------------------------------------------------------


def province_outline() -> Polygon:
    """The drawn province outline, with a gentle, reproducible wiggle on its edges."""
    ring = LineString([*OUTLINE, OUTLINE[0]]).segmentize(0.01)
    xy = np.asarray(ring.coords)
    t = np.linspace(0, 2 * np.pi, len(xy))
    xy[:, 0] += 0.012 * np.sin(7 * t) + 0.006 * np.sin(23 * t + 1.0)
    xy[:, 1] += 0.012 * np.cos(5 * t + 0.3) + 0.006 * np.sin(19 * t)
    xy[-1] = xy[0]
    return shapely.make_valid(Polygon(xy)).buffer(0).intersection(shapely.box(*PROVINCE_BBOX))


def _random_points_in(poly: Polygon, n: int, rng: np.random.Generator, min_dist: float = 0.0) -> list[Point]:
    xmin, ymin, xmax, ymax = poly.bounds
    prepared = shapely.prepared.prep(poly)
    out: list[Point] = []
    tries = 0
    while len(out) < n and tries < 20000:
        tries += 1
        p = Point(rng.uniform(xmin, xmax), rng.uniform(ymin, ymax))
        if prepared.contains(p) and all(p.distance(q) >= min_dist for q in out):
            out.append(p)
    return out


def _voronoi_cells(generators: list[Point], clip: Polygon) -> list[Polygon]:
    """One cell per generator, clipped to ``clip``: a tiling without gaps or overlaps."""
    cells = shapely.voronoi_polygons(shapely.MultiPoint(generators), extend_to=clip.buffer(1.0))
    by_generator = []
    for g in generators:
        cell = next(c for c in cells.geoms if c.contains(g) or c.touches(g))
        by_generator.append(cell.intersection(clip))
    return by_generator


def _multipolygon(geom: shapely.Geometry) -> MultiPolygon:
    parts = [p for p in shapely.get_parts(shapely.make_valid(geom)) if p.geom_type == "Polygon" and p.area > 1e-9]
    return MultiPolygon(parts)


def wiggle(points: list[tuple[float, float]], rng: np.random.Generator, amplitude: float = 0.006,
           keep_waypoints: bool = False) -> LineString:
    """A road-like line through waypoints: densified, with a smooth sideways wander.

    The ends stay put; with ``keep_waypoints`` every waypoint does (roads meet exactly at the towns they share).
    """
    phase = None
    pieces = [points] if not keep_waypoints else [points[i:i + 2] for i in range(len(points) - 1)]
    coords: list[np.ndarray] = []
    for piece in pieces:
        line = LineString(piece).segmentize(0.004)
        xy = np.asarray(line.coords)
        n = len(xy)
        if n > 2:
            t = np.linspace(0, 1, n)
            if phase is None:
                phase = rng.uniform(0, 2 * np.pi, 2)
            offset = amplitude * (np.sin(2 * np.pi * 3 * t + phase[0]) + 0.5 * np.sin(2 * np.pi * 11 * t + phase[1]))
            offset *= np.sin(np.pi * t)  # waypoints at the ends stay put
            d = np.gradient(xy, axis=0)
            normal = np.column_stack([-d[:, 1], d[:, 0]]) / np.maximum(np.linalg.norm(d, axis=1), 1e-12)[:, None]
            xy = xy + normal * offset[:, None]
        coords.append(xy if not coords else xy[1:])
    return LineString(np.concatenate(coords))


# Kon Tum city's streets: a grid around the centre (west-east, then south-north), two of them one-way
CITY_STREETS_EW = ("Trần Hưng Đạo", "Phan Đình Phùng", "Bà Triệu", "Nguyễn Huệ", "Lê Hồng Phong")
CITY_STREETS_NS = ("Lê Lợi", "Trần Phú", "Hùng Vương", "Phan Chu Trinh", "Ure")
ONE_WAY_STREETS = ("Bà Triệu", "Phan Chu Trinh")  # drawn west to east, and north to south
# Lê Lợi is carried over Nguyễn Huệ by a flyover (grade level 1) from the Bà Triệu crossing to Lê Hồng Phong's:
# the two pass over each other without a junction
FLYOVER = ("Lê Lợi", "Bà Triệu", "Lê Hồng Phong")


def city_streets(centre: tuple[float, float], spacing: float = 0.004) -> list[dict[str, object]]:
    """The city's street grid: urban roads crossing each other and the national roads through the centre."""
    x0, y0 = centre
    half = spacing * (len(CITY_STREETS_NS) - 1) / 2
    rows: list[dict[str, object]] = []
    for i, name in enumerate(CITY_STREETS_EW):  # a one-way street runs from a crossing to a crossing, no stubs
        y, out = y0 - half + i * spacing, 0 if name in ONE_WAY_STREETS else spacing
        rows.append(dict(kind="road", name=f"Đường {name}", road_class="urban", oneway=name in ONE_WAY_STREETS,
                         geometry=LineString([(x0 - half - out, y), (x0 + half + out, y)])))
    for i, name in enumerate(CITY_STREETS_NS):
        x, out = x0 - half + i * spacing, 0 if name in ONE_WAY_STREETS else spacing
        top, bottom = y0 + half + out, y0 - half - out
        if name != FLYOVER[0]:
            rows.append(dict(kind="road", name=f"Đường {name}", road_class="urban", oneway=name in ONE_WAY_STREETS,
                             geometry=LineString([(x, top), (x, bottom)])))
            continue
        low, high = (y0 - half + CITY_STREETS_EW.index(street) * spacing for street in FLYOVER[1:])
        for (north, south), level in (((top, high), 0), ((high, low), 1), ((low, bottom), 0)):
            rows.append(dict(kind="road", name=f"{'Cầu vượt' if level else 'Đường'} {name}", road_class="urban",
                             oneway=False, grade_level=level, geometry=LineString([(x, north), (x, south)])))
    return rows


# -- administrative units -------------------------------------------------------------------------


def build_admin(rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Province, districts and communes before the reform; province and communes after it; lineage."""
    outline = province_outline()
    district_cells = _voronoi_cells([Point(d.centre) for d in DISTRICTS], outline)
    rows: list[dict] = [dict(code=PROVINCE_CODE, level="province", unit_type="tỉnh", name=PROVINCE_NAME,
                             parent_code=None, valid_from=OLD_VALID_FROM, valid_to=REFORM_DATE,
                             geometry=_multipolygon(outline))]
    communes: list[dict] = []
    code = 23281
    for district, cell in zip(DISTRICTS, district_cells, strict=True):
        cell = _multipolygon(cell)
        rows.append(dict(code=district.code, level="district", unit_type=district.unit_type, name=district.name,
                         parent_code=PROVINCE_CODE, valid_from=OLD_VALID_FROM, valid_to=REFORM_DATE, geometry=cell))
        seat = Point(TOWNS[district.seat])
        n = len(district.communes)
        if district.code == "608":  # ten wards around the city centre, eleven communes outside
            core = seat.buffer(0.045).intersection(cell)
            gens = [seat, *_random_points_in(core, 9, rng, 0.012)]
            gens += _random_points_in(cell.difference(seat.buffer(0.06)), n - 10, rng, 0.03)
        else:
            spacing = 0.6 * np.sqrt(cell.area / n)
            gens = [seat, *_random_points_in(cell.difference(seat.buffer(spacing * 0.6)), n - 1, rng, spacing)]
        for (unit_type, name), geom in zip(district.communes, _voronoi_cells(gens, cell), strict=True):
            communes.append(dict(code=str(code), level="commune", unit_type=unit_type, name=name,
                                 parent_code=district.code, valid_from=OLD_VALID_FROM, valid_to=REFORM_DATE,
                                 geometry=_multipolygon(geom)))
            code += 3
    rows += communes
    new_units, lineage = _reform(communes, rng)
    rows.append(dict(code=NEW_PROVINCE_CODE, level="province", unit_type="tỉnh", name=NEW_PROVINCE_NAME,
                     parent_code=None, valid_from=REFORM_DATE, valid_to=None, geometry=_multipolygon(outline)))
    rows += new_units
    lineage.append(dict(old_code=PROVINCE_CODE, old_valid_from=OLD_VALID_FROM, new_code=NEW_PROVINCE_CODE,
                        new_valid_from=REFORM_DATE, effective_date=REFORM_DATE, relation="merged", area_share=1.0))
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    return frame, pd.DataFrame(lineage)


def _reform(communes: list[dict], rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """The 2025 reform: neighbouring communes of a district merge, about three into one.

    One is split between two new communes, one is only renamed. A new unit reuses the code of its
    first member, so the same code now names a different area.
    """
    groups: list[list[int]] = []
    by_district: dict[str, list[int]] = {}
    for i, c in enumerate(communes):
        by_district.setdefault(c["parent_code"], []).append(i)
    for members in by_district.values():
        left = list(members)
        while left:
            first = left.pop(0)
            near = sorted((j for j in left if communes[j]["geometry"].touches(communes[first]["geometry"])
                           or communes[j]["geometry"].intersects(communes[first]["geometry"])),
                          key=lambda j: communes[j]["geometry"].centroid.distance(communes[first]["geometry"].centroid))
            group = [first, *near[:2]]
            for j in group[1:]:
                left.remove(j)
            groups.append(group)
    # The split: the second member of the first three-member group in Đắk Hà goes half to its
    # own group, half to the neighbouring group nearest to it.
    pieces: dict[int, list[tuple[int, shapely.Geometry]]] = {g: [] for g in range(len(groups))}
    split_done = False
    for g, group in enumerate(groups):
        for i in group:
            geom = communes[i]["geometry"]
            if not split_done and communes[i]["parent_code"] == "615" and len(group) == 3 and i == group[1]:
                others = [h for h in range(len(groups)) if h != g and communes[groups[h][0]]["parent_code"] == "615"]
                target = min(others, key=lambda h: communes[groups[h][0]]["geometry"].distance(geom))
                c = geom.centroid
                toward = communes[groups[target][0]]["geometry"].centroid
                dx, dy = toward.x - c.x, toward.y - c.y
                # cut along the line through the centroid, perpendicular to the direction of the target
                half = Polygon([(c.x - dy * 50, c.y + dx * 50), (c.x + dy * 50, c.y - dx * 50),
                                (c.x + dy * 50 + dx * 50, c.y - dx * 50 + dy * 50),
                                (c.x - dy * 50 + dx * 50, c.y + dx * 50 + dy * 50)])
                pieces[target].append((i, geom.intersection(half)))
                pieces[g].append((i, geom.difference(half)))
                split_done = True
            else:
                pieces[g].append((i, geom))
    new_units, lineage = [], []
    renamed_done = False
    for g, group in enumerate(groups):
        lead = communes[group[0]]
        geom = _multipolygon(shapely.union_all([p for _, p in pieces[g]]))
        if len(group) == 1 and not renamed_done:
            name, relation = f"{lead['name']} mới", "renamed"
            renamed_done = True
        else:
            name, relation = lead["name"], "merged"
        unit_type = "phường" if lead["parent_code"] == "608" and lead["unit_type"] == "phường" else "xã"
        new_units.append(dict(code=lead["code"], level="commune", unit_type=unit_type, name=name,
                              parent_code=NEW_PROVINCE_CODE, valid_from=REFORM_DATE, valid_to=None, geometry=geom))
        for i, piece in pieces[g]:
            old = communes[i]
            share = min(1.0, piece.area / old["geometry"].area)
            is_split = share < 0.999
            lineage.append(dict(old_code=old["code"], old_valid_from=OLD_VALID_FROM, new_code=lead["code"],
                                new_valid_from=REFORM_DATE, effective_date=REFORM_DATE,
                                relation="split" if is_split else relation, area_share=round(share, 6)))
    return new_units, lineage
