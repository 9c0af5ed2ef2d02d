"""What the spatial operations share: a layer by name, a CQL2 filter as SQL, a time window, units in force.

``analysis`` (locate, nearest, within, cameras, impact, hotspots) and ``unit_stats`` (statistics per unit) both
build on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from gis_ioc import cql2_sql, queries
from gis_ioc.catalog import Catalog, Layer, PerLayer, quote_ident
from gis_ioc.errors import InvalidInput, LayerNotFound

LEVELS = ("province", "district", "commune")
# An administrative unit in force on the date bound as :on (valid_to is the first day it no longer is).
IN_FORCE = "valid_from <= :on AND (valid_to IS NULL OR valid_to > :on)"


_FILTERS: PerLayer[tuple[str, dict[str, Any]]] = PerLayer(256)


def filter_sql(layer: Layer, filter_text: str | None) -> tuple[str, dict[str, Any]]:
    """A CQL2 filter as SQL on the table alias ``t``, with its bound values (compiled by SQLAlchemy).

    The same filter on the same layer object is compiled once (a dispatcher's ``kind = 'fire_station'`` on every
    call: 0.5 ms each); the values come back as a copy the caller may add to.
    """
    if not filter_text:
        return "TRUE", {}

    def compiled() -> tuple[str, dict[str, Any]]:
        table = queries.table_of(layer).alias("t")
        expression = cql2_sql.Cql2ToSql(layer, table)(cql2_sql.parse_filter(filter_text, None))  # type: ignore[arg-type]
        return cql2_sql.compile_where(expression)

    where, params = _FILTERS.get(layer, filter_text, compiled)
    return where, dict(params)


def layer_named(catalog: Catalog, conn: Connection | None, layer_id: str) -> Layer:
    """A layer by id; an unknown one is a 400 naming the parameter."""
    try:
        return catalog.get(layer_id, conn)
    except LayerNotFound as err:
        raise InvalidInput(f"layer: {err.message}", param="layer") from None


@dataclass(frozen=True)
class Window:
    """A time window on a layer's datetime column (either end may be open)."""

    start: Any = None
    end: Any = None


def windowed(layer: Layer, where: str, params: dict[str, Any], window: Window | None) -> tuple[str, dict[str, Any]]:
    """``where`` and ``params`` with the window on the layer's time column (start included, end not)."""
    if window is None or (window.start is None and window.end is None):
        return where, params
    if not layer.datetime_column:
        raise InvalidInput(f"window: layer {layer.id!r} has no time column", param="window")
    column = f"t.{quote_ident(layer.datetime_column)}"
    if window.start is not None:
        where += f" AND {column} >= :w_start"
        params["w_start"] = window.start
    if window.end is not None:
        where += f" AND {column} < :w_end"
        params["w_end"] = window.end
    return where, params
