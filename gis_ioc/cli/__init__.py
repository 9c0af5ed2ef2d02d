"""The ``gis-ioc`` command line (typer). Errors are one line on stderr and a non-zero exit.

One module per group of commands: ``serve``, ``database`` (db), ``layers`` (load, demo, layers),
``query``, ``network``, ``keys``, ``benchmarks`` (bench), ``tiles`` (tiles, render); ``common`` holds what they share.
"""

from __future__ import annotations

import sys

import pydantic
import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

from gis_ioc.cli import benchmarks, database, keys, layers, network, query, search, serve, tiles
from gis_ioc.cli.common import app, err_console
from gis_ioc.errors import GisIocError, InvalidInput

app.add_typer(database.db_app, name="db")
app.add_typer(layers.layers_app, name="layers")
app.add_typer(benchmarks.bench_app, name="bench")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(query.query_app, name="query")
app.add_typer(network.network_app, name="network")
app.add_typer(tiles.tiles_app, name="tiles")
__all__ = ["app", "main", "search", "serve"]


def main() -> None:
    """Entry point: run the typer app, turning every known error into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="gis-ioc", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except GisIocError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            err_console.print(f"gis-ioc: error: {line}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2 if isinstance(err, InvalidInput) else 1)
    except pydantic.ValidationError as err:  # a GIS_IOC_* variable out of range or of the wrong kind
        for problem in err.errors():
            name = "GIS_IOC_" + "_".join(str(part) for part in problem["loc"]).upper()
            got = "" if "URL" in name else f" (got {problem.get('input')!r})"  # a URL may hold a password
            err_console.print(f"gis-ioc: error: {name}: {problem['msg']}{got}", highlight=False, soft_wrap=True,
                              markup=False)
        sys.exit(2)
    except NoArgsIsHelpError as err:
        print(err.ctx.get_help() if err.ctx else err.format_message())
        sys.exit(0)
    except ClickException as err:
        err_console.print(f"gis-ioc: error: {err.format_message()}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(err.exit_code)
    except typer.Abort:
        err_console.print("gis-ioc: aborted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        err_console.print("gis-ioc: interrupted")
        sys.exit(130)
