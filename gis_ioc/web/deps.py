"""Typed dependencies for the routers: settings, engine, catalog, the layer named in the path."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from gis_ioc import auth, db, limits
from gis_ioc.auth import Principal
from gis_ioc.catalog import Catalog, Layer
from gis_ioc.errors import Busy, Forbidden, Unauthorized
from gis_ioc.settings import Settings
from gis_ioc.web.formats import negotiate


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    """The app's engine."""
    engine: Engine = request.app.state.engine
    return engine


async def get_read_engine(request: Request) -> Engine:
    """The engine for a read: a replica that has replayed every write this service knows of, else the primary."""
    engine: Engine = request.app.state.reads.engine()
    return engine


async def get_catalog(request: Request) -> Catalog:
    """The app's layer catalog."""
    catalog: Catalog = request.app.state.catalog
    return catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ReadEngineDep = Annotated[Engine, Depends(get_read_engine)]  # routes that only read (no rebuild on the way)
CatalogDep = Annotated[Catalog, Depends(get_catalog)]


def get_layer(
    catalog: CatalogDep, collection_id: Annotated[str, Path(description="Layer id, e.g. `incidents`.")]
) -> Layer:
    """The layer (or per-geometry view, ``incidents.polygons``) named in the path; an unknown one is a 404."""
    return catalog.collection(collection_id)


def get_writable_layer(layer: Annotated[Layer, Depends(get_layer)]) -> Layer:
    """A layer that takes writes: a per-geometry view is read-only (403 naming the layer to write to)."""
    if layer.part:
        raise Forbidden(f"{layer.id!r} is a read-only view; write to /collections/{layer.base_id}/items",
                        param="collectionId")
    return layer


LayerDep = Annotated[Layer, Depends(get_layer)]
WritableLayerDep = Annotated[Layer, Depends(get_writable_layer)]


KEY_COOKIE = "gis_ioc_key"  # set by /views/session for the wall in private-read mode; HttpOnly, SameSite=Strict
KEY_CACHE_S = 10.0  # a key's role is asked of the database at most this often per process (revocation: ≤ 10 s)


class KeyCache:
    """Keys recently checked, with their principal (or None for a refused key), for ``KEY_CACHE_S``."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        """(known, principal) for a key checked less than ``KEY_CACHE_S`` ago."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: str, principal: Principal | None) -> None:
        """Remember a key's answer."""
        self._entries[key] = (time.monotonic() + KEY_CACHE_S, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def principal_of(engine: Engine, key: str) -> Principal | None:
    """The principal of a key, or None for an unknown or revoked one (a database read)."""
    try:
        with engine.begin() as conn:
            return auth.authenticate(conn, key)
    except Unauthorized:
        return None


_KEY_HEADERS = (b"authorization", b"x-api-key")


def keyless_public_read(scope: Scope) -> bool:
    """Reads are public and the request carries no key: the read dependencies would let it through as it is.

    For the pure-ASGI paths (plain tiles, ``direct``) that skip those dependencies; anything with a key goes
    to the routes, which check it and set its statement budget.
    """
    if not scope["app"].state.settings.public_read:
        return False
    cookie = KEY_COOKIE.encode()
    return not any(name in _KEY_HEADERS or (name == b"cookie" and cookie in value) for name, value in scope["headers"])


def request_key(request: Request) -> str | None:
    """The API key a request carries: ``Authorization: Bearer``, ``X-API-Key``, or (reads only) the wall's cookie."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    if not key and request.method in ("GET", "HEAD"):
        key = request.cookies.get(KEY_COOKIE)
    return key or None


async def get_principal(request: Request, engine: EngineDep) -> Principal | None:
    """The caller (None without a key); an unknown or revoked key is a 401.

    Async, so a request without a key (most reads) costs no worker thread; a known key is answered
    from a short cache. A request with a valid key gets the longer keyed statement timeout.
    """
    key = request_key(request)
    if not key:
        return None
    if len(key) > 256:
        raise Unauthorized("the API key is unknown or revoked")
    cache: KeyCache = request.app.state.key_cache
    known, principal = cache.get(key)
    if not known:
        principal = await run_in_threadpool(principal_of, engine, key)
        cache.put(key, principal)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    budget = db.BUDGET.get()
    if budget is not None:
        budget.timeout_ms = request.app.state.settings.keyed_statement_timeout_ms
    return principal


PrincipalDep = Annotated[Principal | None, Depends(get_principal)]


async def require_read(settings: SettingsDep, principal: PrincipalDep) -> None:
    """Reads are anonymous when GIS_IOC_PUBLIC_READ is true; otherwise they need a viewer key."""
    if not settings.public_read:
        auth.require(principal, "viewer", "reading")


class HeavyLimit:
    """How many heavy requests (analysis, statistics, map views, exports, imports) run at once, and who waits.

    Waiting costs no thread and no connection; the pool's other connections stay for tiles, items and
    events. Past ``HEAVY_WAIT_S`` of waiting, or with ``HEAVY_QUEUE`` already waiting, the answer is a 503.
    """

    def __init__(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the places for the duration of the block."""
        if not self.slots.locked():  # a place free and nobody waiting: taken at once (wait_for makes a task)
            await self.slots.acquire()
        else:
            if self.waiting >= HEAVY_QUEUE:
                raise Busy("heavy requests are queued to the limit; try again shortly")
            self.waiting += 1
            try:
                await asyncio.wait_for(self.slots.acquire(), HEAVY_WAIT_S)
            except TimeoutError:
                raise Busy("heavy requests are busy; try again shortly") from None
            finally:
                self.waiting -= 1
        try:
            yield
        finally:
            self.slots.release()


def heavy_work(request: Request) -> contextlib.AbstractAsyncContextManager[None]:
    """One of the app's places for heavy work."""
    limit: HeavyLimit = request.app.state.heavy
    return limit.slot()


async def heavy_slot(request: Request) -> AsyncIterator[None]:
    """A route that is heavy work as a whole."""
    async with heavy_work(request):
        yield


def big_page(request: Request) -> bool:
    """A page of more than ``limits.LIGHT_PAGE_ITEMS`` features (a malformed limit is the route's 400)."""
    try:
        return int(request.query_params.get("limit", "0")) > limits.LIGHT_PAGE_ITEMS
    except ValueError:
        return False


async def export_slot(request: Request) -> AsyncIterator[None]:
    """Heavy work: items as CSV or GeoPackage (made in Python) and big pages; small GeoJSON and HTML pages are not.

    A crowd asking for 10,000 features each then waits for a place, and tiles, small pages and ``/health``
    keep their connections.
    """
    if negotiate(request, ITEM_FORMATS) in ("csv", "gpkg") or big_page(request):
        async with heavy_work(request):
            yield
    else:
        yield


ITEM_FORMATS = ("json", "html", "csv", "gpkg")
HEAVY_WAIT_S = 15.0
HEAVY_QUEUE = 32
Heavy = Depends(heavy_slot)
Export = Depends(export_slot, scope="request")  # held until the page is sent: a big one is streamed
