"""Columns the database derives row by row, derived here for a whole load at once.

An incident's ``commune_code`` is set by a trigger (migration 001) when a row comes without one: the
commune in force on the local date of the report that holds the incident's point on surface, the
smallest code on a shared boundary. Row by row that lookup costs about 50 µs (50 s for a million
rows); here the communes are cut into small pieces by PostGIS once and the points of each chunk are
looked up at once with shapely's STRtree, beside the COPY. The rule is the trigger's, and a test
holds the two to the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely

from gis_ioc.catalog import Layer

COLUMN = "commune_code"
TRIGGER = "incident_commune"
TIMEZONE = "Asia/Ho_Chi_Minh"  # the trigger's: a report's date is the province's local date
_NO_END = np.datetime64("9999-12-31", "D")


def anchors(geoms: np.ndarray) -> np.ndarray:
    """A point on the surface of each geometry (``ST_PointOnSurface``); a point is its own."""
    points = geoms.copy()
    areas = shapely.get_type_id(geoms) != 0
    if areas.any():
        points[areas] = shapely.point_on_surface(geoms[areas])
    return points


@dataclass(frozen=True)
class CommuneLookup:
    """The communes of every period, cut into pieces of at most 64 vertices, in an STRtree."""

    tree: shapely.STRtree
    codes: np.ndarray  # per piece
    rank: np.ndarray  # per piece: the order of its code (the smallest code wins)
    valid_from: np.ndarray  # datetime64[D] per piece
    valid_to: np.ndarray  # datetime64[D] per piece (open: far future)

    @classmethod
    def for_layer(cls, cur: Any, layer: Layer) -> CommuneLookup | None:
        """The lookup when the layer's table derives ``commune_code`` by the trigger, else None."""
        if COLUMN not in layer.properties or not layer.datetime_column:
            return None
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s))",
                    (TRIGGER, layer.table))
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT code, valid_from, valid_to, ST_AsBinary(ST_Subdivide(geom, 64)) FROM admin_units "
                    "WHERE level = 'commune' ORDER BY code")
        rows = cur.fetchall()
        codes = np.array([r[0] for r in rows], dtype=object)
        pieces = shapely.from_wkb([bytes(r[3]) for r in rows]) if rows else np.array([], dtype=object)
        valid_from = np.array([r[1] for r in rows], dtype="datetime64[D]")
        valid_to = np.array([r[2] if r[2] is not None else _NO_END for r in rows], dtype="datetime64[D]")
        _, rank = np.unique(codes.astype(str), return_inverse=True) if rows else (None, np.array([], dtype=int))
        shapely.prepare(pieces)
        return cls(shapely.STRtree(pieces), codes, rank, valid_from, valid_to)

    def codes_at(self, geoms: np.ndarray, when: pd.Series | None) -> np.ndarray:
        """The commune code of each geometry on its report time (None outside every commune)."""
        out = np.full(len(geoms), None, dtype=object)
        if not len(geoms) or not len(self.codes):
            return out
        points = anchors(geoms)
        x, y = shapely.get_x(points), shapely.get_y(points)  # NaN for an empty point, which lies nowhere
        where, piece = self.tree.query(points)  # boxes only; then the pieces, prepared, test the points: 2x faster
        hit = shapely.intersects_xy(self.tree.geometries[piece], x[where], y[where])
        where, piece = where[hit], piece[hit]
        if when is None:
            days = np.full(len(geoms), np.datetime64(pd.Timestamp.now(tz=TIMEZONE).date(), "D"))
        else:
            moments = pd.to_datetime(when, utc=True)
            local = moments.dt.tz_convert(TIMEZONE).dt.tz_localize(None).to_numpy().astype("datetime64[D]")
            today = np.datetime64(pd.Timestamp.now(tz=TIMEZONE).date(), "D")  # a missing time becomes now()
            days = np.where(np.isnat(local), today, local)
        day = days[where]
        ok = (self.valid_from[piece] <= day) & (day < self.valid_to[piece])
        where, piece = where[ok], piece[ok]
        order = np.lexsort((self.rank[piece], where))
        where, piece = where[order], piece[order]
        first = np.ones(len(where), dtype=bool)
        first[1:] = where[1:] != where[:-1]
        out[where[first]] = self.codes[piece[first]]
        return out


def fill(data: pd.DataFrame, geoms: np.ndarray, lookup: CommuneLookup, datetime_column: str | None) -> None:
    """Fill ``commune_code`` where a chunk's rows have none (in place)."""
    known = data[COLUMN].astype(object).to_numpy() if COLUMN in data else np.full(len(data), None, dtype=object)
    missing = pd.isna(known)
    if missing.any():
        when = data[datetime_column][missing] if datetime_column and datetime_column in data else None
        known[missing] = lookup.codes_at(geoms[missing], when)
    data[COLUMN] = known
