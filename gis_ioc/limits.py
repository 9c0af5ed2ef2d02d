"""What one request may ask for: sizes, nesting depths, and the range of every parameter that scales work.

Checked before a recursive parser (CQL2, JSON) or a query sees the input. Over a bound is an
``InvalidInput`` (400) naming the parameter and the bound. The same numbers are in the OpenAPI
document (``minimum``/``maximum``) and the README.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gis_ioc.errors import InvalidInput

# -- parsing -----------------------------------------------------------------------------------------
MAX_FILTER_CHARS = 16_384  # a CQL2 filter (text or JSON); a URL longer than this is refused by the server anyway
MAX_FILTER_NESTING = 100  # CQL2 text: parentheses deep plus NOT operators (the parser recurses on both)
MAX_FILTER_OPERATORS = 2_000  # CQL2 text: + - * / % ^ (arithmetic chains make deep trees)
MAX_JSON_DEPTH = 64  # objects and arrays nested in a body or a CQL2-JSON filter (GeoJSON needs about 8)
MAX_FEATURE_BYTES = 16 * 1024 * 1024  # a JSON body (one feature); files go through the import routes

# -- work ----------------------------------------------------------------------------------------------
LIGHT_PAGE_ITEMS = 1_000  # an items page over this is heavy work (several MB of JSON made at once)
MAX_OFFSET = 10_000  # items: deeper pages follow the `next` link (a cursor), which costs the same at any depth
MAX_RADIUS_M = 200_000  # circles, nearest's max_distance_m, impact radius: a province is about 150 km across
MAX_AREA_SPAN_DEG = 5.0  # an area given as a polygon: at most this many degrees across in longitude and latitude
MAX_AREA_VERTICES = 50_000
MAX_FEATURE_VERTICES = 50_000  # a feature written through the API (a commune's boundary has a few thousand)
MAX_EPS_M = 5_000  # DBSCAN neighbourhood
MAX_MIN_POINTS = 10_000
MIN_CELL_M, MAX_CELL_M = 10, 100_000  # hotspot grid cells
MAX_H3_RESOLUTION = 11  # about 25 m cells; finer ones only spread a province's points one to a cell
MAX_HOTSPOT_POINTS = 250_000  # features one grid or H3 hotspot run may group
MAX_DBSCAN_POINTS = 20_000  # ST_ClusterDBSCAN cannot be interrupted: 20,000 points within 300 m took 4.8 s here
MAX_WINDOW_DAYS = 3_660  # views' time windows: ten years
MAX_IMPACT_LAYERS = 8
# ids a file may bring: JavaScript and most GeoJSON readers hold numbers exactly up to 2^53 - 1, and the layer's
# identity, moved past a file's largest id, keeps room for every row added after it
MIN_FEATURE_ID, MAX_FEATURE_ID = 1, 2**53 - 1
MAX_TEXT_CHARS = 20_000  # a text property (a description of a few tens of kB); every copy of a row carries it
EVENT_TEXT_CHARS = 500  # a text property in a live event: a popup's worth; the feature's URL has all of it
MIN_YEAR, MAX_YEAR = 1900, 2199  # dates and times a layer stores (no "0001-01-01", no year 9999)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def bad(param: str, message: str) -> InvalidInput:
    """A 400 naming ``param``."""
    return InvalidInput(f"{param}: {message}", param=param)


def check_text(value: str, param: str, max_chars: int) -> str:
    """A text parameter with no NUL and at most ``max_chars`` characters."""
    if len(value) > max_chars:
        raise bad(param, f"{len(value):,} characters is over the limit of {max_chars:,}")
    if "\x00" in value:
        raise bad(param, "contains a NUL character")
    return value


def check_cql2_text(text: str, param: str = "filter") -> None:
    """Refuse CQL2 text that would make the parser recurse too deep, before it sees it.

    The parser (a Rust library) recurses on parentheses, NOT and arithmetic chains and dies with
    the process, not an exception, when they nest a few thousand deep.
    """
    check_text(text, param, MAX_FILTER_CHARS)
    depth = deepest = nots = operators = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":  # a string literal; '' is a quote inside it
            i += 1
            while i < n:
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif c in "+-*/%^":
            operators += 1
        elif c.isalpha() or c == "_":
            word = _WORD.match(text, i)
            assert word is not None
            if word.group().upper() == "NOT":
                nots += 1
            i = word.end()
            continue
        i += 1
    if deepest + nots > MAX_FILTER_NESTING:
        raise bad(param, f"nests {deepest + nots} levels (parentheses and NOT); the limit is {MAX_FILTER_NESTING}")
    if operators > MAX_FILTER_OPERATORS:
        raise bad(param, f"has {operators:,} arithmetic operators and signs; the limit is {MAX_FILTER_OPERATORS:,}")


def depth(value: Any) -> int:
    """How deep objects and arrays nest in parsed JSON (iterative: safe at any depth)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def nul_path(value: Any) -> str | None:
    """Where a NUL character hides in parsed JSON (``properties.title``), or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "body"
        elif isinstance(item, dict):
            for key, v in item.items():
                if "\x00" in str(key):
                    return f"{path}.{key}".lstrip(".")
                stack.append((v, f"{path}.{key}".lstrip(".")))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def loads(raw: bytes | str, param: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON with its nesting bounded; too deep or not JSON is a 400 naming ``param``.

    Python's parser raises RecursionError (it does not crash) past about a thousand levels; the
    parsed value is then measured without recursion before anything recursive walks it.
    """
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad(param, f"nested deeper than the limit of {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad(param, f"not valid JSON ({err})") from None
    if depth(value) > max_depth:
        raise bad(param, f"nested deeper than the limit of {max_depth} levels")
    return value


def number(value: float, param: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number within [low, high] (or (low, high]), else a 400 naming the range."""
    value = float(value)
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad(param, f"{value:g} is not within {bracket}{low:g}, {high:g}]")
    return value


def whole(value: int, param: str, low: int, high: int) -> int:
    """A whole number within [low, high], else a 400 naming the range."""
    if not low <= value <= high:
        raise bad(param, f"{value} is not between {low} and {high}")
    return value
