"""Find any place in Vietnamese: units (today's and former), facilities, roads, cameras, incidents, coordinates.

One ranked list for what an operator types ("Đắk Hà", "dak ha", "ÐẮK HÀ", "dac ha", "xã Đắk Hà",
"bệnh viện Kon Tum", "QL14", "quốc lộ 14", "CAM-00012", "#1234", "14.35, 108.0", "14°21'N 108°00'E",
"1587000 555000"). Names are compared folded (``gis_ioc_fold`` in the database, ``fold`` here: lower
case, no diacritics, Đ/đ/Ð as d) with trigram similarity, so a typo still finds the place (migration
011). Coordinates are read in the usual forms: decimal in either order (decided by the province's
extent), degrees-minutes-seconds, and VN-2000 x/y in the province's TM-3 zone.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyproj import Transformer
from sqlalchemy.engine import Connection

from gis_ioc.errors import InvalidInput

KINDS = ("coordinates", "unit", "facility", "road", "camera", "incident")
MAX_QUERY = 200
MAX_LIMIT = 50
TM3_SRID = 9216  # VN-2000 / TM-3 107°30', Kon Tum's zone
ACTIVE = ("new", "verified", "dispatched", "in_progress", "reopened")
# unit types an operator may type before a name (folded), longest first
UNIT_TYPES = {"thanh pho": "thành phố", "thi tran": "thị trấn", "thi xa": "thị xã", "phuong": "phường", "huyen":
              "huyện", "tinh": "tỉnh", "tp": "thành phố", "xa": "xã"}
_ROAD = [(re.compile(r"^(?:quoc lo|ql)[\s.\-]*(\d+[a-z]?)$"), "ql"),
         (re.compile(r"^(?:duong tinh|tinh lo|dt)[\s.\-]*(\d+[a-z]?)$"), "dt")]


def fold(text: str) -> str:
    """Lower case, without diacritics (Đ, đ and Ð as d), trimmed: as ``gis_ioc_fold`` in the database."""
    text = text.replace("Đ", "D").replace("đ", "d").replace("Ð", "D")
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return bare.lower().strip()


@dataclass
class Query:
    """What was typed, folded and taken apart."""

    text: str
    folded: str
    name: str  # without a leading unit type
    unit_type: str | None  # the unit type typed, as the data writes it
    road: str | None  # ``ql14``, ``dt676``
    code: str | None  # a camera's code (``cam-00012``): letters and digits, joined by a dash
    incident_id: int | None
    only_id: bool  # ``#123``: an incident by its id and nothing else


def parse(text: str) -> Query:
    """Fold a query and recognise its parts (unit type, road number, incident id)."""
    if len(text) > MAX_QUERY:
        raise InvalidInput(f"q: at most {MAX_QUERY} characters", param="q")
    if "\x00" in text:
        raise InvalidInput("q: holds a NUL character", param="q")
    folded = " ".join(fold(text).split())
    if not re.search(r"[a-z0-9]", folded):
        raise InvalidInput("q: give a place, a name, a road, an id or coordinates", param="q")
    name, unit_type = folded, None
    for typed, written in UNIT_TYPES.items():
        if folded.startswith(typed + " ") and len(folded) > len(typed) + 1:
            name, unit_type = folded[len(typed) + 1:], written
            break
    road = None
    for pattern, prefix in _ROAD:
        found = pattern.match(folded)
        if found:
            road = prefix + found.group(1)
    found_id = re.fullmatch(r"#?\s*(\d{1,12})", text.strip())
    coded = re.fullmatch(r"([a-z]{1,10})[\s\-_.]*(\d{1,10})", folded)
    code = f"{coded.group(1)}-{coded.group(2)}" if coded else None
    return Query(text, folded, name, unit_type, road, code, int(found_id.group(1)) if found_id else None,
                 text.strip().startswith("#") and found_id is not None)


_NUMBER = r"[-+]?\d+(?:[.,]\d+)?"
_DMS = re.compile(r"""(?P<deg>\d{1,3}(?:[.,]\d+)?)\s*(?:°|º|d|\s)\s*(?:(?P<min>\d{1,2}(?:[.,]\d+)?)\s*(?:'|′|m|\s)\s*)?
                      (?:(?P<sec>\d{1,2}(?:[.,]\d+)?)\s*(?:"|″|''|s)?\s*)?(?P<hemi>[NSEWnsew])?""", re.X)


def _dms_values(text: str) -> list[tuple[float, str | None]]:
    values = []
    for found in _DMS.finditer(text):
        if not found.group(0).strip():
            continue
        value = float(found["deg"].replace(",", "."))
        if found["min"]:
            value += float(found["min"].replace(",", ".")) / 60
        if found["sec"]:
            value += float(found["sec"].replace(",", ".")) / 3600
        hemi = found["hemi"].upper() if found["hemi"] else None
        values.append((-value if hemi in ("S", "W") else value, hemi))
    return values


@functools.cache
def _from_tm3() -> Transformer:
    """VN-2000 / TM-3 to longitude, latitude (made once: a transformer takes milliseconds to build)."""
    return Transformer.from_crs(TM3_SRID, 4326, always_xy=True)


def parse_coordinates(text: str, region: tuple[float, float, float, float]) -> tuple[float, float, str] | None:
    """Longitude, latitude and the form they were read in, or None when the text is not coordinates."""
    xmin, ymin, xmax, ymax = region
    stripped = text.strip()

    def in_region(lon: float, lat: float) -> bool:
        return xmin <= lon <= xmax and ymin <= lat <= ymax

    plain = re.fullmatch(rf"\(?\s*({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*\)?", stripped.replace(", ", ","))
    if plain:
        a, b = (float(v.replace(",", ".")) for v in plain.groups())
        if abs(a) > 1000 and abs(b) > 1000:  # VN-2000 metres: x is the northing (~1.5-1.7 million), y the easting
            north, east = (a, b) if a > b else (b, a)
            lon, lat = _from_tm3().transform(east, north)
            return (lon, lat, f"VN-2000 / TM-3 (EPSG:{TM3_SRID}) x/y") if in_region(lon, lat) else None
        if in_region(a, b):
            return a, b, "longitude, latitude"
        if in_region(b, a):
            return b, a, "latitude, longitude"
        return None
    if not re.search(r"[°º'′\"″NSEWnsew]", stripped) or re.search(r"[a-zA-Z]{2,}", stripped):
        return None
    values = _dms_values(stripped)
    if len(values) != 2:
        return None
    (a, ha), (b, hb) = values
    if ha in ("E", "W") or hb in ("N", "S"):
        a, b = b, a
    if in_region(b, a):
        return b, a, "degrees, minutes, seconds"
    if in_region(a, b):
        return a, b, "degrees, minutes, seconds"
    return None


PLACES = """
  SELECT 'unit' AS kind, 'admin_units' AS collection, u.id, u.name, u.unit_type AS type, u.code, u.valid_to,
         (CASE WHEN gis_ioc_fold(u.name) = :name THEN 1.0
               ELSE greatest(similarity(gis_ioc_fold(u.name), :name),
                             CASE WHEN length(:name) BETWEEN 4 AND 12
                                   AND levenshtein(gis_ioc_fold(u.name), :name) <= 1 THEN 0.8 ELSE 0 END) END
          + CASE WHEN :unit_type IS NOT NULL AND u.unit_type = :unit_type THEN 0.2 ELSE 0 END
          + CASE WHEN u.valid_to IS NULL THEN 0.1 ELSE 0 END
          + CASE u.level WHEN 'commune' THEN 0.02 WHEN 'district' THEN 0.01 ELSE 0 END) AS score,
         ST_PointOnSurface(u.geom) AS at, u.geom AS shape
  FROM admin_units u
  WHERE 'unit' = ANY(:kinds) AND (gis_ioc_fold(u.name) % :name OR gis_ioc_fold(u.name) = :name
        OR (length(:name) BETWEEN 4 AND 12 AND levenshtein(gis_ioc_fold(u.name), :name) <= 1))
UNION ALL
  SELECT CASE WHEN i.kind IN ('road', 'river') THEN 'road' ELSE 'facility' END, 'infrastructure', i.id, i.name,
         i.kind, NULL, NULL,
         CASE WHEN gis_ioc_fold(i.name) = :folded THEN 1.0
              ELSE greatest(similarity(gis_ioc_fold(i.name), :folded), word_similarity(:folded, gis_ioc_fold(i.name)))
         END,
         CASE WHEN GeometryType(i.geom) = 'POINT' THEN i.geom ELSE ST_PointOnSurface(i.geom) END, i.geom
  FROM infrastructure i
  WHERE i.name IS NOT NULL AND ((CASE WHEN i.kind IN ('road', 'river') THEN 'road' ELSE 'facility' END) = ANY(:kinds))
    AND (gis_ioc_fold(i.name) % :folded OR :folded <% gis_ioc_fold(i.name))
UNION ALL
  SELECT 'road', 'infrastructure', i.id, i.name, i.kind, NULL, NULL, 1.3,
         ST_PointOnSurface(i.geom), i.geom
  FROM infrastructure i
  WHERE 'road' = ANY(:kinds) AND :road IS NOT NULL AND replace(gis_ioc_fold(i.name), ' ', '') = :road
UNION ALL
  SELECT 'camera', 'cameras', c.id, c.name, c.camera_type, NULL, NULL,
         CASE WHEN gis_ioc_fold(split_part(c.name, ' ', 1)) = :code THEN 1.2 ELSE 0.9 END, c.geom, c.geom
  FROM cameras c
  WHERE 'camera' = ANY(:kinds) AND :code IS NOT NULL
    AND gis_ioc_fold(split_part(c.name, ' ', 1)) LIKE replace(replace(:code, '%', ''), '_', '') || '%'
"""

# an incident by its id, or active incidents by their title (asked for, or when no place fits well)
INCIDENTS = """
  SELECT 'incident' AS kind, 'incidents' AS collection, n.id, n.title AS name, n.type, NULL AS code,
         NULL::date AS valid_to, 1.5 AS score,
         CASE WHEN GeometryType(n.geom) = 'POINT' THEN n.geom ELSE ST_PointOnSurface(n.geom) END AS at,
         n.geom AS shape
  FROM incidents n WHERE n.id = :incident_id
UNION ALL
  SELECT 'incident', 'incidents', n.id, n.title, n.type, NULL, NULL, similarity(gis_ioc_fold(n.title), :folded),
         CASE WHEN GeometryType(n.geom) = 'POINT' THEN n.geom ELSE ST_PointOnSurface(n.geom) END, n.geom
  FROM incidents n
  WHERE :titles AND n.status IN ('new', 'verified', 'dispatched', 'in_progress', 'reopened')
    AND gis_ioc_fold(n.title) % :folded AND n.id IS DISTINCT FROM :incident_id
"""

RANKED = """
WITH found AS ({found}), ranked AS (
  SELECT * FROM (  -- a road found by its number and by trigram once, at its best score
    SELECT DISTINCT ON (collection, id) *,
           score + CASE WHEN :near_lon IS NULL THEN 0
                        ELSE 0.3 / (1 + ST_Distance(at::geography,
                                                    ST_SetSRID(ST_MakePoint(:near_lon, :near_lat), 4326)::geography)
                                        / 5000) END AS rank
    FROM found ORDER BY collection, id, score DESC) best
  ORDER BY rank DESC, name LIMIT :limit
)
SELECT r.kind, r.collection, r.id, r.name, r.type, r.code, r.valid_to, round(r.rank::numeric, 3) AS score,
       ST_AsGeoJSON(CASE WHEN GeometryType(r.shape) = 'POINT' THEN r.shape
                         ELSE ST_SimplifyPreserveTopology(r.shape, 0.0002) END, 6)::json AS geometry,
       ST_X(r.at) AS lon, ST_Y(r.at) AS lat,
       today.code AS unit_code, today.name AS unit_name, today.unit_type AS unit_type
FROM ranked r
LEFT JOIN LATERAL (SELECT c.code, c.name, c.unit_type FROM admin_units c
                   WHERE c.level = 'commune' AND c.valid_to IS NULL AND ST_Intersects(c.geom, r.at)
                   ORDER BY c.code LIMIT 1) today ON true
ORDER BY r.rank DESC, r.name
"""


def _unit(code: str | None, name: str | None, unit_type: str | None) -> dict[str, str | None] | None:
    return {"code": code, "name": name, "type": unit_type} if code else None


def search(conn: Connection, text: str, *, kinds: list[str] | None = None, near: tuple[float, float] | None = None,
           limit: int = 10, region: tuple[float, float, float, float] = (102.0, 8.0, 110.0, 23.5)
           ) -> dict[str, Any]:
    """The places that match ``text``, best first (see the module's description)."""
    wanted = list(kinds or KINDS)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise InvalidInput(f"types: {', '.join(unknown)} not known (types: {', '.join(KINDS)})", param="types")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: between 1 and {MAX_LIMIT}", param="limit")
    query = parse(text)
    results: list[dict[str, Any]] = []
    if "coordinates" in wanted:
        point = parse_coordinates(text, region)
        if point is not None:
            lon, lat, form = point
            place = conn.execute(sa.text(
                "SELECT code, name, unit_type FROM admin_units WHERE level = 'commune' AND valid_to IS NULL "
                "AND ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) ORDER BY code LIMIT 1"),
                {"lon": lon, "lat": lat}).first()
            results.append({"kind": "coordinates", "name": f"{lat:.6f}, {lon:.6f}", "type": form, "score": 2.0,
                            "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
                            "lies_in": _unit(*place) if place else None})
    params = {
        "kinds": [k for k in wanted if k != "coordinates"], "folded": query.folded, "name": query.name,
        "unit_type": query.unit_type, "road": query.road, "code": query.code, "incident_id": query.incident_id,
        "near_lon": near[0] if near else None, "near_lat": near[1] if near else None, "limit": limit,
    }
    rows = [] if query.only_id else list(conn.execute(sa.text(RANKED.format(found=PLACES)), params).mappings())
    if "incident" in wanted:
        # titles are searched when incidents are asked for alone or no place fits: a place's name is in
        # thousands of incident titles ("Tai nạn giao thông tại Đắk Hà"), and those are not what was looked for
        titles = not query.only_id and (wanted == ["incident"] or not rows)
        if titles or query.incident_id is not None:
            rows += conn.execute(sa.text(RANKED.format(found=INCIDENTS)), {**params, "titles": titles}
                                 ).mappings().all()
            rows.sort(key=lambda r: (-float(r["score"]), r["name"] or ""))
    for row in rows:
        geometry = row["geometry"] if isinstance(row["geometry"], dict) else json.loads(row["geometry"])
        item: dict[str, Any] = {
            "kind": row["kind"], "collection": row["collection"], "id": row["id"], "name": row["name"],
            "type": row["type"], "score": float(row["score"]), "geometry": geometry,
            "at": [round(row["lon"], 7), round(row["lat"], 7)],
        }
        if row["kind"] == "unit":
            item["code"] = row["code"]
            item["label"] = f"{row['type']} {row['name']} ({row['code']})"  # two communes may share a name
            if row["valid_to"] is not None:  # a former unit: where its place is today
                item["valid_to"] = row["valid_to"].isoformat()
                item["label"] += f", until {item['valid_to']}"
                item["today"] = _unit(row["unit_code"], row["unit_name"], row["unit_type"])
        else:
            item["lies_in"] = _unit(row["unit_code"], row["unit_name"], row["unit_type"])
        results.append(item)
    return {"query": text, "folded": query.folded, "results": results[:limit]}


def near_point(text: str | None) -> tuple[float, float] | None:
    """``near=lon,lat`` (400 naming ``near`` otherwise)."""
    if text is None:
        return None
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput("near: write it as lon,lat", param="near") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput("near: lon within ±180 and lat within ±90", param="near")
    return lon, lat
