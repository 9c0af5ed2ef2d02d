"""gis-ioc db: migrations and the private PostGIS cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from sqlalchemy.engine import Engine

from gis_ioc.cli.common import _catalog, _engine, _settings, date_option, out
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import MAX_KEEP_MONTHS

if TYPE_CHECKING:
    from gis_ioc.catalog import Layer

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


@db_app.command("dump")
def db_dump(
    file: Annotated[Path, typer.Argument(help="The dump to write (PostgreSQL custom format).")],
    layers_only: Annotated[bool, typer.Option(help="Only the layers: boundaries and lineage, cameras, incidents, "
                                                   "infrastructure, imported layers (no keys, no audit log).")]
    = False,
) -> None:
    """Back up the configured database (private cluster or GIS_IOC_DATABASE_URL) to FILE."""
    from gis_ioc import backup, db

    settings = _settings()
    backup.dump(db.database_url(settings), file, layers_only=layers_only)
    out.print(f"wrote {file} ({file.stat().st_size / 1e6:,.1f} MB{', layers only' if layers_only else ''})")


@db_app.command("restore")
def db_restore(file: Annotated[Path, typer.Argument(help="A dump written by gis-ioc db dump.")]) -> None:
    """Restore FILE into the configured database, which must hold no features yet (all or nothing)."""
    from gis_ioc import backup, db

    settings = _settings()
    engine = _engine(settings)  # migrated: the schema comes from this version of gis-ioc
    restored = backup.restore(db.database_url(settings), engine, _catalog(settings, engine), file)
    counts = ", ".join(f"{k} {v:,}" for k, v in restored.features.items())
    out.print(f"restored {file}: {counts}; id sequences, layer versions and tile cells brought up to date")


def _by_month(layer: str) -> tuple[Engine, Layer]:
    """The configured database and ``layer``, whose table must be partitioned by month."""
    from gis_ioc import partitions

    settings = _settings()
    engine = _engine(settings)
    found = _catalog(settings, engine).get(layer)
    with engine.connect() as conn:
        if partitions.partitioning(conn, found.table) is None:
            raise InvalidInput(f"--layer: {layer!r} is not partitioned by month", param="layer")
    return engine, found


@db_app.command("months")
def db_months(
    layer: Annotated[str, typer.Option(help="A layer partitioned by month.")] = "incidents",
) -> None:
    """List a layer's monthly partitions (making this month's and the next two's first)."""
    from gis_ioc import partitions

    engine, partitioned = _by_month(layer)
    table = partitioned.table
    with engine.begin() as conn:
        made = partitions.ahead(conn, table)
        found = partitions.months(conn, table)
    listing = Table(title=f"{layer} by month: {len(found)} partitions{f', {made} made ahead' if made else ''}")
    for column in ("month", "partition", "rows (estimate)"):
        listing.add_column(column, justify="right" if column.startswith("rows") else "left")
    for row in partitions.describe(found):
        listing.add_row(row["month"], row["partition"], f"{row['rows']:,}")
    out.print(listing)
    if len(found) > partitions.MANY_MONTHS:
        out.print(f"{len(found)} months attached: each request without a time window plans every one of them "
                  "(docs/sizing.md). Archive the old ones: gis-ioc db archive --keep-months 24, or set "
                  "GIS_IOC_KEEP_MONTHS for the server to do it.")


@db_app.command("archive")
def db_archive(
    before: Annotated[str | None, typer.Option(help="Archive every month that ended by this date (YYYY-MM-DD, "
                                                    "local).")] = None,
    keep_months: Annotated[int | None, typer.Option(help="Or: archive all but the last this many months (this "
                                                         "month counted).")] = None,
    layer: Annotated[str, typer.Option(help="A layer partitioned by month.")] = "incidents",
) -> None:
    """Detach old months of a layer into the schema archive (still read by analysis with archived=true)."""
    from gis_ioc import partitions

    if (before is None) == (keep_months is None):
        raise InvalidInput("give either --before DATE or --keep-months N", param="before")
    if keep_months is not None and not 1 <= keep_months <= MAX_KEEP_MONTHS:
        raise InvalidInput(f"--keep-months: {keep_months} is not between 1 and {MAX_KEEP_MONTHS}",
                           param="keep-months")
    cutoff = date_option(before, "before")
    engine, partitioned = _by_month(layer)
    table = partitioned.table
    if cutoff is not None:
        done = partitions.archive(engine, cutoff, table)
    else:
        assert keep_months is not None
        kept = partitions.archive_older(engine, keep_months, table)
        if kept is None:
            raise InvalidInput(f"{layer}: no archive table, or another process is archiving it now", param="layer")
        done = kept
    if not done.months:
        what = f"ended by {cutoff.isoformat()}" if cutoff else f"is older than the last {keep_months}"
        out.print(f"no month of {layer} {what}: nothing archived")
    else:
        out.print(f"archived {len(done.months)} months of {layer} ({done.rows:,} rows) into "
                  f"{partitions.ARCHIVE_SCHEMA}: {', '.join(done.months)}")


@db_app.command("order-months")
def db_order_months(
    before: Annotated[str | None, typer.Option(help="Rewrite the months that ended by this date (YYYY-MM-DD, "
                                                    "local) [the first day of last month].")] = None,
    layer: Annotated[str, typer.Option(help="A layer partitioned by month.")] = "incidents",
) -> None:
    """Rewrite closed months of a layer in spatial order (a small box's rows on few pages); each once."""
    from gis_ioc import month_order

    engine, partitioned = _by_month(layer)
    table = partitioned.table
    cutoff = date_option(before, "before") or month_order.closed_before(engine, table)
    geometry = partitioned.geometry.column
    done = month_order.order_months(engine, table, cutoff, geometry, each=lambda month: out.print(
        f"{month.partition}: {month.rows:,} rows in spatial order ({month.seconds:g} s)"))
    if done is None:
        raise InvalidInput(f"{layer}: another process is rewriting its months now; try again later", param="layer")
    if not done:
        out.print(f"no month of {layer} that ended by {cutoff.isoformat()} is left in time order: nothing to do")
