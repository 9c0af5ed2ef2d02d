"""The FastAPI application, built from settings by ``create_app``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import gis_ioc
from gis_ioc import db, maps
from gis_ioc.catalog import Catalog
from gis_ioc.errors import GisIocError, http_status
from gis_ioc.events import ChangeListener
from gis_ioc.settings import Settings
from gis_ioc.tiles import WALL_LAYERS, TileCache, sync_cell_config, warm
from gis_ioc.web import analysis, edit, ogc, views
from gis_ioc.web import events as events_router
from gis_ioc.web import tiles as tiles_router
from gis_ioc.web.deps import EngineDep, require_read


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: the lifespan connects, applies pending migrations and loads the catalog."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.connect(settings)
        db.migrate(engine, settings.migrations_dir)
        app.state.settings = settings
        app.state.engine = engine
        app.state.catalog = Catalog.from_folder(settings.layers_dir, engine)
        app.state.tile_cache = TileCache(settings.home / "tiles") if settings.tile_cache else None
        with engine.connect() as conn:
            sync_cell_config(conn, app.state.catalog)
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        app.state.listener = ChangeListener(url)
        app.state.listener.start()
        stop_warming = threading.Event()
        warming = threading.Thread(target=warm, name="gis-ioc-warm", daemon=True,
                                   args=(engine, app.state.catalog, app.state.tile_cache, WALL_LAYERS,
                                         settings.region_bbox, [8, 9, 10, 11], stop_warming))
        if app.state.tile_cache is not None and settings.warm_tiles:
            warming.start()  # the wall's first view, made before the wall asks for it
        try:
            yield
        finally:
            stop_warming.set()
            if warming.is_alive():
                warming.join(timeout=10)
            app.state.listener.stop()
            engine.dispose()

    app = FastAPI(
        title="gis-ioc",
        version=gis_ioc.__version__,
        description="Spatial operations service of a provincial Intelligent Operations Center: "
        "OGC API – Features over PostGIS layers (administrative units, cameras, incidents, infrastructure).",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )

    @app.exception_handler(GisIocError)
    async def domain_error(request: Request, err: GisIocError) -> JSONResponse:
        body: dict[str, Any] = {"code": err.code, "description": err.message}
        if err.param:
            body["parameter"] = err.param
        return JSONResponse(body, status_code=http_status(err))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": ["request"], "msg": "invalid"}
        param = str(first["loc"][-1])
        return JSONResponse({"code": "invalid_input", "description": f"{param}: {first['msg']}", "parameter": param},
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "error")
        return JSONResponse({"code": code, "description": str(err.detail)}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.get("/health", summary="Service and database health", operation_id="getHealth", tags=["Service"])
    def health(engine: EngineDep) -> JSONResponse:
        """Whether the service can reach its database (liveness for monitoring)."""
        try:
            with engine.connect() as conn:
                postgis = conn.execute(sa.text("SELECT postgis_lib_version()")).scalar()
                version = conn.execute(sa.text("SELECT max(version) FROM schema_migrations")).scalar()
        except sa.exc.SQLAlchemyError as err:
            reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
            return JSONResponse({"status": "unavailable", "database": reason}, status_code=503)
        return JSONResponse(
            {"status": "ok", "database": "ok", "postgis": postgis, "schema_version": version,
             "version": gis_ioc.__version__}
        )

    @app.get("/ready", summary="Ready to serve", operation_id="getReady", tags=["Service"])
    def ready(request: Request, engine: EngineDep) -> JSONResponse:
        """Ready when the database answers, the schema is current and the layers are readable."""
        try:
            with engine.connect() as conn:
                pending = db.pending_migrations(engine, settings.migrations_dir)
                for layer in request.app.state.catalog.layers(conn):
                    conn.execute(sa.text(f"SELECT 1 FROM {layer.table} LIMIT 1"))
        except sa.exc.SQLAlchemyError as err:
            reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        if pending:
            return JSONResponse({"ready": False, "reason": f"{len(pending)} pending migrations"}, status_code=503)
        return JSONResponse({"ready": True})

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            return JSONResponse({"code": "payload_too_large", "parameter": "body",
                                 "description": f"body: {int(length):,} bytes is over the limit of "
                                                f"{settings.max_body_bytes:,} (GIS_IOC_MAX_BODY_BYTES)"},
                                status_code=413)
        return await call_next(request)

    @app.middleware("http")
    async def read_your_writes(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and response.status_code < 400:
            # tiles take layer versions from NOTIFY; a client's next read after its own write must not
            # race that message, so this process reads the versions again before answering
            await run_in_threadpool(request.app.state.listener.reload_versions, request.app.state.engine)
        return response

    app.include_router(ogc.router, dependencies=[Depends(require_read)])
    app.include_router(edit.router)
    app.include_router(analysis.router, dependencies=[Depends(require_read)])
    app.include_router(tiles_router.router, dependencies=[Depends(require_read)])
    app.include_router(events_router.router, dependencies=[Depends(require_read)])
    app.include_router(views.router, dependencies=[Depends(require_read)])
    app.mount("/static", StaticFiles(directory=maps.STATIC), name="static")
    return app


def openapi_document() -> str:
    """The app's OpenAPI document as stable, indented JSON (no database needed to build it)."""
    import json

    return json.dumps(create_app(Settings()).openapi(), indent=2, ensure_ascii=False, sort_keys=False)
