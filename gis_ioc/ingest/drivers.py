"""Which GDAL driver opens a file: only the one its suffix names, and nothing the file refers to is followed.

GDAL picks a driver by the file's content, not its name: an OGR VRT document saved as ``x.geojson`` is
opened as VRT, and its ``SrcDataSource`` may name any file on the server or a ``/vsicurl/`` URL. Before a
file is opened, GDAL's own probe (``GDALIdentifyDriverEx``, the one ``GDALOpenEx`` runs) is asked which
driver it would take, and anything but the suffix's driver is refused. A GeoPackage is SQL the driver
runs: views and virtual tables other than its R-tree index are refused (triggers other than the
standard ones too, although a read-only open fires none).

The drivers kept follow no file reference: KML's NetworkLinks and external styles are not fetched, a
Shapefile's sidecars are beside it (in a zip, inside the zip), CSV and FlatGeobuf hold data only. A URL
GDAL would fetch while reading (a GeoJSON ``crs`` naming one) is answered by a fetch callback that
fetches nothing, pushed for the thread while it reads (``offline``): other GDAL work in the process (a
notebook reading a WFS) keeps its network.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from gis_ioc.errors import IngestError

# the drivers a suffix may be opened with (GDAL's short names)
DRIVERS: dict[str, tuple[str, ...]] = {
    ".geojson": ("GeoJSON",),
    ".json": ("GeoJSON", "ESRIJSON", "TopoJSON"),
    ".gpkg": ("GPKG",),
    ".shp": ("ESRI Shapefile",),
    ".zip": ("ESRI Shapefile",),
    ".fgb": ("FlatGeobuf",),
    ".kml": ("KML", "LIBKML"),
    ".csv": ("CSV",),
}
_GDAL_OF_VECTOR = 0x04
# triggers a GeoPackage carries by the standard (R-tree index, tile matrix, metadata) and GDAL's feature counts
_STANDARD_TRIGGER = re.compile(r"^(rtree_|gpkg_|trigger_(insert|delete)_feature_count_)", re.IGNORECASE)
_RTREE = re.compile(r"^\s*CREATE\s+VIRTUAL\s+TABLE\s+\S+\s+USING\s+rtree\s*\(", re.IGNORECASE)


# CPLHTTPFetchCallbackFunc: (url, options, progress, progress data, write, write data, user data) -> result
_FETCH = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_RESULT_BYTES = 256  # over the size of GDAL's CPLHTTPResult, zeroed: its pointers NULL, its counts 0


class _ResultHead(ctypes.Structure):
    """The first fields of GDAL's CPLHTTPResult: a status (non-zero: failed) and the error text."""

    _fields_ = [("status", ctypes.c_int), ("content_type", ctypes.c_void_p), ("error", ctypes.c_void_p)]


class _Gdal:
    """The GDAL library pyogrio loaded, for the calls pyogrio does not expose."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.identify = library.GDALIdentifyDriverEx
        self.identify.restype = ctypes.c_void_p
        self.identify.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.short_name = library.GDALGetDriverShortName
        self.short_name.restype = ctypes.c_char_p
        self.short_name.argtypes = [ctypes.c_void_p]
        self._calloc = library.VSICalloc
        self._calloc.restype = ctypes.c_void_p
        self._calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        self._strdup = library.CPLStrdup
        self._strdup.restype = ctypes.c_void_p
        self._strdup.argtypes = [ctypes.c_char_p]
        self.no_fetch = _FETCH(self._refuse_fetch)  # kept alive for as long as GDAL may call it
        self.push_fetch = library.CPLHTTPPushFetchCallback
        self.push_fetch.restype = ctypes.c_int
        self.push_fetch.argtypes = [_FETCH, ctypes.c_void_p]
        self.pop_fetch = library.CPLHTTPPopFetchCallback
        self.pop_fetch.restype = ctypes.c_int
        self.pop_fetch.argtypes = []

    def _refuse_fetch(self, *_: object) -> int | None:
        """Every HTTP fetch GDAL asks for answered as failed, in memory GDAL frees (CPLHTTPDestroyResult)."""
        address = self._calloc(1, _RESULT_BYTES)
        if address:
            head = _ResultHead.from_address(address)
            head.status = 1
            head.error = self._strdup(b"network access is off while gis-ioc reads files")
        return int(address) if address else None


@functools.cache
def _gdal() -> _Gdal:
    """The very library pyogrio uses (its wheel ships one of its own), found among the process's mappings."""
    import pyogrio  # noqa: F401  (loads GDAL into the process)

    maps = Path("/proc/self/maps")
    loaded = {line.split()[-1] for line in maps.read_text().splitlines() if "/libgdal" in line} if maps.exists() \
        else set()
    name = next(iter(sorted(loaded)), None) or ctypes.util.find_library("gdal")
    if name is None:
        raise RuntimeError("GDAL's library cannot be found in the process")
    return _Gdal(ctypes.CDLL(name))


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """GDAL fetches nothing over HTTP in this thread for the duration (a callback that answers every fetch failed)."""
    gdal = _gdal()
    if not gdal.push_fetch(gdal.no_fetch, None):
        raise RuntimeError("GDAL refused the fetch callback")
    try:
        yield
    finally:
        gdal.pop_fetch()


def identify(target: str) -> str | None:
    """The short name of the vector driver GDAL would open ``target`` with (None: none would)."""
    gdal = _gdal()
    with offline():
        handle = gdal.identify(target.encode(), _GDAL_OF_VECTOR, None, None)
    if not handle:
        return None
    name = gdal.short_name(handle)
    return name.decode() if name else None


def check(path: Path, target: str, suffix: str) -> None:
    """Refuse a file unless GDAL would open it with the driver its suffix names (and a GeoPackage runs no SQL)."""
    allowed = DRIVERS.get(suffix)
    if allowed is None:
        return
    driver = identify(target)
    if driver is None:
        raise IngestError(f"{path}: cannot read the file: it is not {' or '.join(allowed)}", param="file")
    if driver not in allowed:
        raise IngestError(f"{path}: a {suffix} file must be {' or '.join(allowed)}; GDAL reads it as {driver}, "
                          "which is refused", param="file")
    if driver == "GPKG":
        check_geopackage(path)


def check_geopackage(path: Path) -> None:
    """Refuse a GeoPackage holding SQL that reading would run: views, virtual tables other than R-trees."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True) as conn:
            entries = conn.execute("SELECT type, name, coalesce(sql, '') FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as err:
        raise IngestError(f"{path}: not a readable GeoPackage ({err})", param="file") from None
    for kind, name, sql in entries:
        refused = (kind == "view" or (kind == "table" and sql.lstrip().upper().startswith("CREATE VIRTUAL")
                                       and not _RTREE.match(sql))
                   or (kind == "trigger" and not _STANDARD_TRIGGER.match(name)))
        if refused:
            what = "virtual table" if kind == "table" else kind
            raise IngestError(f"{path}: the GeoPackage holds a {what} ({str(name)[:63]!r}); views, virtual tables "
                              "and triggers beyond the standard ones are refused (save the layer as a plain table)",
                              param="file")
