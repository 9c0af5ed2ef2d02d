"""The ``gis-ioc`` command's entry point: ``gis-ioc load`` reaches a running server before the CLI is imported.

The full command line (typer, which brings pydantic, and every command's module) takes ~0.4 s to import;
a planner's ``gis-ioc load FILE --layer L`` is handed to the running server of its home (``load_service``)
from here, its options read by argparse exactly as the ``load`` command declares them (a test holds the two
to the same options). Anything this path does not take — help, an option it does not know, a bad value,
no server — goes on to the full command line, which parses, explains and loads as it always did.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class _Declined(Exception):
    """These arguments are for the full command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never print or exit: the full command line says what is wrong
        raise _Declined(message)


def _flag(parser: argparse.ArgumentParser, name: str) -> None:
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, action="store_true", default=False)
    parser.add_argument(f"--no-{name}", dest=dest, action="store_false")


def load_parser() -> argparse.ArgumentParser:
    """The options of ``gis-ioc load`` (as ``gis_ioc.cli.layers.load`` declares them)."""
    parser = _Parser(prog="gis-ioc load", add_help=False, allow_abbrev=False)
    parser.add_argument("file")
    parser.add_argument("--layer", "-l", required=True)
    parser.add_argument("--crs")
    parser.add_argument("--mode", default="append")
    parser.add_argument("--map", dest="map_", action="append", default=[])
    parser.add_argument("--set", dest="set_", action="append", default=[])
    parser.add_argument("--source-layer", dest="source_layer")
    for name in ("cascade", "strict", "ignore-unknown", "local"):
        _flag(parser, name)
    return parser


def _quick_load(argv: list[str]) -> int | None:
    """Hand a load to the running server; its exit code, or None to go on with the full command line."""
    from gis_ioc import load_service
    from gis_ioc.errors import GisIocError, InvalidInput
    from gis_ioc.paths import Place

    try:
        args = load_parser().parse_args(argv)
    except _Declined:
        return None
    if args.local or args.mode not in load_service.MODES:
        return None
    try:
        request = {"file": args.file, "layer": args.layer, "crs": args.crs, "mode": args.mode,
                   "map": load_service.parse_map(args.map_), "set": load_service.parse_set(args.set_),
                   "strict": args.strict, "ignore_unknown": args.ignore_unknown, "cascade": args.cascade,
                   "source_layer": args.source_layer}
        report = load_service.load_via_server(Place.from_environment(), request, _progress(args.file))
    except GisIocError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"gis-ioc: error: {line}", file=sys.stderr)
        return 2 if isinstance(err, InvalidInput) else 1
    if report is None:
        return None
    load_service.print_report(report)
    return 0


def _progress(file: str) -> Any:
    """A progress bar on a terminal past 20,000 rows (rich, imported only then)."""
    state: dict[str, Any] = {}

    def show(done: int, total: int) -> None:
        if total < 20_000 or not sys.stderr.isatty():
            return
        if "bar" not in state:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            state["bar"] = Progress(TextColumn(f"loading {file}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task("load", total=total)
        state["bar"].update(state["task"], completed=done)
        if done >= total:
            state["bar"].stop()

    return show


def main() -> None:
    """``gis-ioc``: a load for a running server goes there at once; everything else to the full command line."""
    argv = sys.argv[1:]
    if argv[:1] == ["load"] and not {"--help", "-h"} & set(argv):
        try:
            code = _quick_load(argv[1:])
        except KeyboardInterrupt:
            print("gis-ioc: interrupted", file=sys.stderr)
            sys.exit(130)
        if code is not None:
            sys.exit(code)
    from gis_ioc.cli import main as full

    full()
