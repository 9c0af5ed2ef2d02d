"""The FastAPI application, built from settings by ``create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

import gis_ioc
from gis_ioc import db
from gis_ioc.catalog import Catalog
from gis_ioc.errors import GisIocError, http_status
from gis_ioc.settings import Settings


def get_engine(request: Request) -> Engine:
    """The app's engine."""
    return request.app.state.engine


def get_catalog(request: Request) -> Catalog:
    """The app's layer catalog."""
    return request.app.state.catalog


EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]


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
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="gis-ioc",
        version=gis_ioc.__version__,
        description="Spatial operations service of a provincial Intelligent Operations Center.",
        lifespan=lifespan,
    )

    @app.exception_handler(GisIocError)
    async def domain_error(request: Request, err: GisIocError) -> JSONResponse:
        body: dict[str, Any] = {"code": err.code, "description": err.message}
        if err.param:
            body["parameter"] = err.param
        return JSONResponse(body, status_code=http_status(err))

    @app.get("/", summary="Landing page", operation_id="getLandingPage")
    def landing(request: Request) -> dict[str, Any]:
        return {
            "title": "gis-ioc",
            "description": "Spatial operations service of a provincial Intelligent Operations Center",
            "links": [
                {"rel": "self", "href": str(request.url_for("landing")), "type": "application/json"},
                {"rel": "data", "href": str(request.url_for("layers")), "type": "application/json"},
                {"rel": "service-status", "href": str(request.url_for("health")), "type": "application/json"},
            ],
        }

    @app.get("/health", summary="Service and database health", operation_id="getHealth")
    def health(engine: EngineDep) -> JSONResponse:
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

    @app.get("/collections", summary="The layers, with their feature counts", operation_id="getCollections")
    def layers(request: Request, engine: EngineDep, catalog: CatalogDep) -> dict[str, Any]:
        with engine.connect() as conn:
            entries = []
            for layer, count in catalog.counts(conn):
                entries.append(
                    {
                        "id": layer.id,
                        "title": layer.title,
                        "description": layer.description,
                        "itemType": "feature",
                        "geometryTypes": [t.value for t in layer.geometry.types],
                        "numberOfFeatures": count.value,
                        "countIsEstimate": count.estimated,
                        "source": layer.source,
                        "note": count.note,
                    }
                )
        return {
            "collections": entries,
            "links": [{"rel": "self", "href": str(request.url_for("layers")), "type": "application/json"}],
        }

    return app
