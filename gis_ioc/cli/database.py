"""gis-ioc db: migrations and the private PostGIS cluster."""

from __future__ import annotations

import typer

from gis_ioc.cli.common import _engine, _settings, out
from gis_ioc.errors import InvalidInput

db_app = typer.Typer(help="The database: migrations and the private PostGIS cluster.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (idempotent)."""
    from gis_ioc import db

    settings = _settings()
    engine = _engine(settings, migrate=False)
    applied = db.migrate(engine, settings.migrations_dir)
    if applied:
        for m in applied:
            out.print(f"applied {m.path.name}")
    else:
        out.print("database is up to date")


@db_app.command("status")
def db_status() -> None:
    """Where the database is, and which migrations are pending."""
    from gis_ioc import db
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    if settings.database_url:
        out.print("database: GIS_IOC_DATABASE_URL")
    else:
        state = PrivateCluster(settings.home).status()
        out.print(f"private cluster: {state['data_dir']} "
                  f"({'running on port ' + str(state['port']) if state['running'] else 'stopped'})")
        if not state["running"]:  # a status never starts anything
            out.print("pending migrations: unknown while the cluster is stopped (gis-ioc db start)")
            return
    engine = _engine(settings, migrate=False)
    pending = db.pending_migrations(engine, settings.migrations_dir)
    out.print(f"pending migrations: {', '.join(m.path.name for m in pending) or 'none'}")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starting the private cluster if needed), for psql, QGIS or ogr2ogr."""
    from gis_ioc import db

    out.print(db.database_url(_settings()), highlight=False, soft_wrap=True)


@db_app.command("start")
def db_start() -> None:
    """Start the private cluster."""
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    if settings.database_url:
        raise InvalidInput("GIS_IOC_DATABASE_URL is set: there is no private cluster to start")
    PrivateCluster(settings.home).ensure_running()
    out.print(f"private cluster running ({PrivateCluster(settings.home).status()['port']})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the private cluster."""
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    stopped = PrivateCluster(settings.home).stop()
    out.print("private cluster stopped" if stopped else "private cluster was not running")
