"""The FastAPI application, built from settings by ``create_app``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg2
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import gis_ioc
from gis_ioc import db, db_loop, load_service, maps, partitions
from gis_ioc.catalog import Catalog
from gis_ioc.errors import GisIocError, InvalidInput, Unauthorized, from_database, http_status
from gis_ioc.events import ChangeListener, wait_connected
from gis_ioc.replicas import ReadRouter
from gis_ioc.settings import Settings
from gis_ioc.tile_cache import database_folder
from gis_ioc.tile_cells import FreshCells, rebuild_stale_cells, sync_cell_config
from gis_ioc.tiles import TileCache, warm
from gis_ioc.version_board import VersionBoard
from gis_ioc.web import alerts, analysis, contract, edit, ogc, search, views
from gis_ioc.web import events as events_router
from gis_ioc.web import routing as routing_router
from gis_ioc.web import tiles as tiles_router
from gis_ioc.web.compress import GZip
from gis_ioc.web.deps import EngineDep, HeavyLimit, KeyCache, require_read
from gis_ioc.web.direct import DirectRoutes
from gis_ioc.web.guard import REQUEST_ID, Guard, error_body, error_headers
from gis_ioc.web.views import Memo

log = logging.getLogger("gis_ioc.web")


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
        app.state.key_cache = KeyCache()
        app.state.heavy = HeavyLimit(settings.heavy_slots)
        app.state.fresh_cells = FreshCells()
        app.state.wall_page, app.state.desk_page, app.state.kpi = Memo(), Memo(), Memo()
        with engine.connect() as conn:
            sync_cell_config(conn, app.state.catalog)
            folder = database_folder(conn)
        tiles_folder = settings.home / "tiles" / folder
        url = db.database_url(settings)  # as given: libpq takes several hosts (failover) as they are written
        app.state.listener = ChangeListener(url)
        app.state.event_texts = events_router.EventTexts()
        app.state.listener.board = VersionBoard(settings.home / "run" / f"versions-{folder}.json")
        app.state.listener.start()
        # a moment for LISTEN, so the first answers carry ETags and the replicas' floor (it goes on without it)
        wait_connected(app.state.listener, 5)
        app.state.reads = ReadRouter(engine, url, settings.replica_url_list, settings.replica_max_lag_ms,
                                     settings.pool_size, floor=app.state.listener.wal_floor)
        app.state.reads.start()
        app.state.loop_lane = db_loop.LoopLane(url, engine.dialect) if settings.loop_lane else None
        loads = contextlib.ExitStack()  # `gis-ioc load` hands its files to this process (load_service)
        app.state.load_service = loads.enter_context(load_service.serving(settings, app.state.catalog, url))
        app.state.tile_cache = TileCache(tiles_folder, max_disk_bytes=settings.tile_cache_mb * 1024 * 1024,
                                         current=app.state.listener.versions) if settings.tile_cache else None
        stop_warming = threading.Event()
        months = threading.Thread(target=partitions.keep_ahead, name="gis-ioc-months", daemon=True,
                                  args=(engine, stop_warming), kwargs={"keep_months": settings.keep_months,
                                                                     "order": settings.order_months})
        months.start()  # this month's partition and the next two's (older ones archived), again every few hours
        warming = threading.Thread(target=warm, name="gis-ioc-warm", daemon=True,
                                   args=(engine, app.state.catalog, app.state.tile_cache, maps.wall_tiles(),
                                         settings.region_bbox, [8, 9, 10, 11], stop_warming))
        if app.state.tile_cache is not None and settings.warm_tiles:
            warming.start()  # the wall's first view, made before the wall asks for it
        elif settings.warm_tiles:  # no cache to warm: still rebuild the cells a bulk load left stale
            warming = threading.Thread(target=rebuild_stale_cells, name="gis-ioc-cells", daemon=True,
                                       args=(engine, app.state.catalog))
            warming.start()
        try:
            yield
        finally:
            stop_warming.set()
            if warming.is_alive():
                warming.join(timeout=10)
            months.join(timeout=10)
            loads.close()
            if app.state.loop_lane is not None:
                app.state.loop_lane.close()
            app.state.listener.stop()
            app.state.reads.stop()
            engine.dispose()

    app = FastAPI(
        title="gis-ioc",
        version=gis_ioc.__version__,
        description="Spatial operations service of a provincial Intelligent Operations Center: "
        "OGC API – Features over PostGIS layers (administrative units, cameras, incidents, infrastructure).",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served below from this server's own files: no CDN (a control room may be offline)
        redoc_url=None,
        openapi_url=None,  # served below: the document with one items path per collection
    )

    collection_paths: dict[str, Any] = {"key": None, "document": None}

    @app.get("/openapi.json", include_in_schema=False, name="openapi")
    def openapi_json() -> JSONResponse:
        """The OpenAPI document, with an items path per collection naming its property filters (GDAL, QGIS)."""
        catalog: Catalog = app.state.catalog
        try:
            layers = catalog.layers()
        except (GisIocError, sa.exc.SQLAlchemyError, psycopg2.Error):  # the database is away: built-in layers only
            layers = list(catalog.builtin.values())
        layers += [view for layer in layers for view in layer.parts()]
        key = tuple(layer.model_dump_json() for layer in layers)
        if collection_paths["key"] != key:
            collection_paths["document"] = contract.with_collections(app.openapi(), layers)
            collection_paths["key"] = key
        return JSONResponse(collection_paths["document"])

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI for this API, every file from this server."""
        swagger = "/static/vendor/swagger-ui-5.35.0"
        return get_swagger_ui_html(openapi_url="/openapi.json", title="gis-ioc API",
                                   swagger_js_url=f"{swagger}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{swagger}/swagger-ui.css",
                                   swagger_favicon_url=f"{swagger}/favicon-32x32.png")

    @app.exception_handler(GisIocError)
    async def domain_error(request: Request, err: GisIocError) -> Response:
        status = http_status(err)
        if isinstance(err, Unauthorized) and _wants_page(request):  # a person at a view: offer to sign in
            following = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return HTMLResponse(maps.sign_in_page(following), status_code=401)
        return JSONResponse(error_body(err), status_code=status, headers=error_headers(status))

    @app.exception_handler(sa.exc.SQLAlchemyError)
    @app.exception_handler(psycopg2.Error)
    async def database_error(request: Request, err: Exception) -> Response:
        known = from_database(err)
        if known is None:
            raise err  # a bug: the guard logs it and answers 500
        return await domain_error(request, known)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {"loc": ["request"], "msg": "invalid"}
        param = str(first["loc"][-1])
        return await domain_error(request, InvalidInput(f"{param}: {first['msg']}", param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "error")
        body = {"code": code, "description": str(err.detail), "request_id": REQUEST_ID.get()}
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.get("/health", summary="Service and database health", operation_id="getHealth", tags=["Service"])
    def health(request: Request, engine: EngineDep) -> JSONResponse:
        """Whether the service can reach its database (liveness for monitoring); no connection details.

        With read replicas, each one's state: reachable, still a standby, lag, read from now.
        """
        replicas = [{k: r[k] for k in ("reachable", "standby", "lag_ms", "reading", "reads")}
                    for r in request.app.state.reads.status()]
        extra = {"replicas": replicas} if replicas else {}
        try:
            with engine.connect() as conn:
                postgis = conn.execute(sa.text("SELECT postgis_lib_version()")).scalar()
                version = conn.execute(sa.text("SELECT max(version) FROM schema_migrations")).scalar()
        except sa.exc.SQLAlchemyError:
            return JSONResponse({"status": "unavailable", "database": "unavailable", **extra}, status_code=503,
                                headers=error_headers(503))
        return JSONResponse(
            {"status": "ok", "database": "ok", "postgis": postgis, "schema_version": version,
             "version": gis_ioc.__version__, **extra}
        )

    @app.get("/ready", summary="Ready to serve", operation_id="getReady", tags=["Service"])
    def ready(request: Request, engine: EngineDep) -> JSONResponse:
        """Ready when the database answers, the schema is current and the layers are readable."""
        try:
            with engine.connect() as conn:
                pending = db.pending_migrations(engine, settings.migrations_dir)
                for layer in request.app.state.catalog.layers(conn):
                    conn.execute(sa.text(f"SELECT 1 FROM {layer.table} LIMIT 1"))
        except sa.exc.SQLAlchemyError:
            return JSONResponse({"ready": False, "reason": "the database is unavailable"}, status_code=503,
                                headers=error_headers(503))
        if pending:
            return JSONResponse({"ready": False, "reason": f"{len(pending)} pending migrations"}, status_code=503,
                                headers=error_headers(503))
        return JSONResponse({"ready": True})

    app.add_middleware(ReadYourWrites)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract.exact(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                tags=app.openapi_tags))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # inside the gzip middleware: the routes by road skip the router (no key, a valid query)
    app.add_middleware(DirectRoutes, routes=routing_router.DIRECT)
    if settings.gzip_level:
        # inside the guard; tiles carry their own cached gzip bytes (Content-Encoding set: left alone), event
        # streams are never buffered; pages over 128 KiB are compressed in a worker thread
        app.add_middleware(GZip, minimum_size=1024, compresslevel=settings.gzip_level)
    app.add_middleware(tiles_router.TileFastPath)  # just inside the guard: plain tiles skip the router
    app.add_middleware(Guard, settings=settings, openapi=openapi)
    if settings.cors_origin_list:
        # outside the guard: a browser's preflight (OPTIONS with Access-Control-Request-Method) is answered here,
        # a plain OPTIONS goes on to the guard's Allow. No credentials: keys travel in headers, not cookies.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
                           allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-Match", "If-None-Match",
                                          "Last-Event-ID", "X-Request-ID", "Accept", "Accept-Language"],
                           expose_headers=["ETag", "Location", "Content-Crs", "X-Request-ID", "Retry-After"],
                           max_age=3600)
    app.include_router(ogc.router, dependencies=[Depends(require_read)])
    app.include_router(edit.router)
    app.include_router(analysis.router, dependencies=[Depends(require_read)])
    app.include_router(routing_router.router, dependencies=[Depends(require_read)])
    app.include_router(search.router, dependencies=[Depends(require_read)])
    app.include_router(alerts.router, dependencies=[Depends(require_read)])
    app.include_router(tiles_router.router, dependencies=[Depends(require_read)])
    app.include_router(events_router.router, dependencies=[Depends(require_read)])
    app.include_router(views.router, dependencies=[Depends(require_read)])
    app.include_router(views.session_router)
    app.mount("/static", StaticFiles(directory=maps.STATIC), name="static")
    return app


class ReadYourWrites:
    """After a write that succeeded, this process reads the layer versions again before it answers.

    Tiles take layer versions from NOTIFY; a client's next read after its own write must not race that
    message. Plain ASGI (Starlette's ``BaseHTTPMiddleware`` costs every request a task and a stream).
    """

    WRITES = frozenset(("POST", "PUT", "PATCH", "DELETE"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass reads through; hold a successful write's response until the versions are read."""
        if scope["type"] != "http" or scope["method"] not in self.WRITES:
            await self.app(scope, receive, send)
            return

        async def send_after_reload(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                state = scope["app"].state
                try:
                    await run_in_threadpool(state.listener.reload_versions, state.engine)
                except sa.exc.SQLAlchemyError as err:  # the write is done: its answer stands, the NOTIFY follows
                    log.warning("layer versions not read after a write (%s); the change notice will bring them",
                                str(err).splitlines()[0][:200])
            await send(message)

        await self.app(scope, receive, send_after_reload)


def _wants_page(request: Request) -> bool:
    """A browser asking for an HTML view (not its JSON or tiles)."""
    return (request.method in ("GET", "HEAD") and request.url.path.startswith("/views")
            and not request.url.path.endswith(".json") and "text/html" in request.headers.get("accept", ""))


def openapi_document() -> str:
    """The app's OpenAPI document as stable, indented JSON (no database needed to build it)."""
    import json

    return json.dumps(create_app(Settings()).openapi(), indent=2, ensure_ascii=False, sort_keys=False)
