"""What every command shares: the root app, the consoles, settings, engine, catalog (progress bars: ``progress``)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from gis_ioc.catalog import Catalog
    from gis_ioc.settings import Settings

app = typer.Typer(
    help="gis-ioc: the spatial operations service of a provincial Intelligent Operations Center.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
out = Console()
err_console = Console(stderr=True)


def date_option(value: str | None, option: str) -> date | None:
    """A ``--option`` date (None when not given); anything but YYYY-MM-DD is an error naming the option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        from gis_ioc.errors import InvalidInput

        raise InvalidInput(f"--{option}: {value!r} is not a date (YYYY-MM-DD)", param=option) from None


def _settings() -> Settings:
    from gis_ioc.settings import Settings  # pydantic: ~0.3 s, which `gis-ioc load` spares when a server loads

    return Settings()


def _engine(settings: Settings, migrate: bool = True) -> Engine:
    from gis_ioc import db

    engine = db.connect(settings)
    if migrate:
        db.migrate(engine, settings.migrations_dir)
    return engine


def _catalog(settings: Settings, engine: Engine) -> Catalog:
    from gis_ioc.catalog import Catalog

    return Catalog.from_folder(settings.layers_dir, engine)
