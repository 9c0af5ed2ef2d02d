"""Typed dependencies for the routers: settings, engine, catalog, the layer named in the path."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gis_ioc import auth
from gis_ioc.auth import Principal
from gis_ioc.catalog import Catalog, Layer
from gis_ioc.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    """The app's engine."""
    engine: Engine = request.app.state.engine
    return engine


async def get_catalog(request: Request) -> Catalog:
    """The app's layer catalog."""
    catalog: Catalog = request.app.state.catalog
    return catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]


def get_layer(
    catalog: CatalogDep, collection_id: Annotated[str, Path(description="Layer id, e.g. `incidents`.")]
) -> Layer:
    """The layer named in the path; an unknown one is a 404."""
    return catalog.get(collection_id)


LayerDep = Annotated[Layer, Depends(get_layer)]


def _authenticate(engine: Engine, key: str) -> Principal | None:
    with engine.begin() as conn:
        return auth.authenticate(conn, key)


async def get_principal(request: Request, engine: EngineDep) -> Principal | None:
    """The caller, from ``Authorization: Bearer KEY`` or ``X-API-Key`` (None without a key).

    Async, so a request without a key (most reads) costs no worker thread.
    """
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    if not key:
        return None
    return await run_in_threadpool(_authenticate, engine, key)


PrincipalDep = Annotated[Principal | None, Depends(get_principal)]


async def require_read(settings: SettingsDep, principal: PrincipalDep) -> None:
    """Reads are anonymous when GIS_IOC_PUBLIC_READ is true; otherwise they need a viewer key."""
    if not settings.public_read:
        auth.require(principal, "viewer", "reading")
