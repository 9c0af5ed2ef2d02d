"""What every command shares: the root app, the consoles, settings, engine, catalog, a progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

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


class _Bar:
    """A rich progress bar for long loads, only on a terminal and only past a few thousand rows."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if total < 20_000 or not err_console.is_terminal:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=err_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        assert self.task is not None
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
