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


NOBODY_TOOK_IT = -1  # no server of this home took the load: the full command line loads it without asking again


def _quick_load(argv: list[str]) -> int | None:
    """Hand a load to the running server; its exit code, ``NOBODY_TOOK_IT``, or None for the full command line."""
    from gis_ioc import load_service
    from gis_ioc.errors import GisIocError, InvalidInput
    from gis_ioc.paths import Place
    from gis_ioc.progress import Bar

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
        bar = Bar(f"loading {args.file}")
        try:
            report = load_service.load_via_server(Place.from_environment(), request, bar)
        finally:
            bar.close()
    except GisIocError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"gis-ioc: error: {line}", file=sys.stderr)
        return 2 if isinstance(err, InvalidInput) else 1
    if report is None:
        return NOBODY_TOOK_IT
    load_service.print_report(report)
    return 0


def main() -> None:
    """``gis-ioc``: a load for a running server goes there at once; everything else to the full command line."""
    argv = sys.argv[1:]
    if argv[:1] == ["load"] and not {"--help", "-h"} & set(argv):
        try:
            code = _quick_load(argv[1:])
        except KeyboardInterrupt:
            print("gis-ioc: interrupted", file=sys.stderr)
            sys.exit(130)
        if code == NOBODY_TOOK_IT:
            sys.argv.append("--local")  # the server was asked already
        elif code is not None:
            sys.exit(code)
    from gis_ioc.cli import main as full

    full()
