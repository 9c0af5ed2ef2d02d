"""Loads done by the running server for ``gis-ioc load``: its imports and connections are already warm.

A command line process pays ~1 s before its first row (Python, pyogrio, which brings pandas and
geopandas, pyproj, SQLAlchemy); a 1,000-row file then loads in 0.15 s. So ``gis-ioc serve`` listens
on a Unix socket in its home (``home/run/load.sock``), and ``gis-ioc load`` hands it the file when
it is there: the same ``ingest.load``, the same transaction and checks, the same report, in the
server's process. The command imports no more than it needs to ask (typer, the settings).

Who may ask: the socket's folder is private (0700) and the server checks the peer's user id
(``SO_PEERCRED``): only the user the server runs as, who could read its database URL anyway. The
server loads only for a client that names the same database and layer folder; otherwise, or when
no server listens, the command loads in its own process as before. The file is read by path, as
the command would read it.

Protocol: one JSON line each way, then JSON lines back: ``{"progress": [done, total]}``…, then
``{"report": {...}}`` or ``{"error": {"type", "message", "param"}}`` (or ``{"declined": reason}``).
A client that goes away cancels its load (the next progress line cannot be written: the COPY is
aborted and rolled back). One load at a time, on a connection of its own: the request pool stays
free for tiles and events.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gis_ioc import errors
from gis_ioc.errors import GisIocError
from gis_ioc.paths import Place

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from gis_ioc.catalog import Catalog
    from gis_ioc.settings import Settings

log = logging.getLogger(__name__)

PROTOCOL = 1
MODES: tuple[str, ...] = ("append", "replace", "upsert")
MAX_REQUEST_BYTES = 64 * 1024  # one JSON line: options and a path
PROGRESS_EVERY_S = 0.2


@dataclass
class LoadReport:
    """What a load did."""

    layer: str
    mode: str
    rows_read: int = 0
    rows_loaded: int = 0
    repaired: int = 0
    refused: int = 0
    seconds: float = 0.0
    source_crs: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    cascaded: dict[str, int] = field(default_factory=dict)  # rows of other tables removed with deleted ones
    period: str | None = None  # what a replace covered, for layers whose rows have a period
    analyze: bool = False  # the table's statistics are still to be made again (``ingest.store.analyze``)
    by_server: bool = False  # loaded by the running server (this module), not in the command's own process

    @property
    def rows_per_second(self) -> float:
        """Loaded rows per second."""
        return self.rows_loaded / self.seconds if self.seconds else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        """A report sent as JSON (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_map(pairs: list[str]) -> dict[str, str]:
    """``--map SRC=DST`` options as a mapping."""
    mapping = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise errors.InvalidInput(f"--map {pair!r}: write it as SOURCE_COLUMN=LAYER_PROPERTY", param="map")
        mapping[src.strip()] = dst.strip()
    return mapping


def parse_set(pairs: list[str]) -> dict[str, str]:
    """``--set COLUMN=VALUE`` options as a mapping."""
    constants = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise errors.InvalidInput(f"--set {pair!r}: write it as COLUMN=VALUE", param="set")
        constants[name.strip()] = value.strip()
    return constants


def print_report(report: LoadReport, console: Any = None) -> None:
    """The report of a load as the command prints it (a rich table)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"loaded into {report.layer} ({report.mode})", show_header=False)
    for label, value in (
        ("rows read", f"{report.rows_read:,}"),
        ("loaded", f"{report.rows_loaded:,}"),
        ("repaired", f"{report.repaired:,}"),
        ("refused", f"{report.refused:,}"),
        ("source CRS", report.source_crs or "?"),
        ("seconds", f"{report.seconds:.2f}"),
        ("rows/s", f"{report.rows_per_second:,.0f}"),
    ):
        table.add_row(label, value)
    if report.mode in ("replace", "upsert"):
        table.add_row("inserted / updated", f"{report.inserted:,} / {report.updated:,}")
    if report.period:
        table.add_row("period replaced", report.period)
    if report.mode == "replace":
        table.add_row("deleted", f"{report.deleted:,}")
    for other, count in report.cascaded.items():
        table.add_row(f"deleted from {other}", f"{count:,} (--cascade)")
    if report.ignored_columns:
        table.add_row("ignored columns", ", ".join(report.ignored_columns))
    if report.by_server:
        table.add_row("loaded by", "the running server (--local: by this command)")
    (console or Console()).print(table)


def socket_path(place: Place) -> Path:
    """Where the server of this home listens for loads."""
    return place.home / "run" / "load.sock"


def identity(place: Place) -> dict[str, str]:
    """The database and layer folder a process works on (never a password)."""
    if place.database_url:
        url = urlsplit(place.database_url)
        scheme = url.scheme.split("+")[0]
        scheme = "postgresql" if scheme == "postgres" else scheme
        database = f"{scheme}://{url.username or ''}@{url.hostname or ''}:{url.port or 5432}{url.path}"
    else:
        database = f"private cluster in {place.home.resolve()}"
    return {"database": database, "layers": str(place.layers_dir.resolve())}


# -- the client: gis-ioc load ------------------------------------------------------------------------


def load_via_server(place: Place, request: dict[str, Any],
                    progress: Callable[[int, int], None] | None = None) -> LoadReport | None:
    """Have the running server load a file; None when no server of this home takes it (load here then).

    ``request``: ``file`` (made absolute here), ``layer``, ``crs``, ``mode``, ``map``, ``set``, ``strict``,
    ``ignore_unknown``, ``cascade``, ``source_layer``. A refused load raises the server's error, as a
    load in this process would.
    """
    path = socket_path(place)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)  # to connect and be answered; the load itself may take minutes
        sock.connect(str(path))
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    message = {**request, "file": str(Path(request["file"]).absolute()), "protocol": PROTOCOL,
               "identity": identity(place)}
    with sock, sock.makefile("rwb") as stream:
        try:
            stream.write(json.dumps(message).encode() + b"\n")
            stream.flush()
        except OSError:
            return None
        for line in stream:
            answer = json.loads(line)
            if "progress" in answer:
                if progress is not None:
                    progress(*answer["progress"])
            elif "report" in answer:
                return LoadReport.from_dict({**answer["report"], "by_server": True})
            elif "error" in answer:
                raise _error(answer["error"])
            elif "declined" in answer:
                log.info("the server did not take the load: %s", answer["declined"])
                return None
    return None  # the server went away before answering: nothing was reported as loaded, load here


def _error(data: dict[str, Any]) -> GisIocError:
    kind = getattr(errors, str(data.get("type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, GisIocError) else GisIocError
    return cls(str(data.get("message") or "the load failed"), param=data.get("param"))


# -- the server: gis-ioc serve -----------------------------------------------------------------------


class _ClientGone(GisIocError):
    """The command that asked for the load went away: the load is abandoned."""


class LoadService:
    """The load socket of one server process (the first of several workers to take its lock)."""

    def __init__(self, settings: Settings, catalog: Catalog, engine: Engine) -> None:
        self.settings = settings
        self.catalog = catalog
        self.engine = engine  # a pool of its own (one connection), not the requests'
        self.path = socket_path(settings.place)
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self._lock_file: Any = None
        self._one_at_a_time = threading.Lock()

    def start(self) -> bool:
        """Listen, unless another process of this home does or the path cannot be used; True if listening."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            if len(os.fsencode(self.path)) > 100:  # AF_UNIX paths are short
                log.warning("load socket not started: %s is too long a path", self.path)
                return False
            self._lock_file = open(self.path.with_suffix(".lock"), "w")  # noqa: SIM115 (held while serving)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another worker serves it, or the folder is not ours
            self._close_lock()
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a server that died
        service = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                service._handle(self.connection, self.rfile, self.wfile)

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="gis-ioc-load-socket", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = None
        self._close_lock()

    def _close_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _handle(self, connection: socket.socket, rfile: Any, wfile: Any) -> None:
        def send(message: dict[str, Any]) -> None:
            wfile.write(json.dumps(message).encode() + b"\n")
            wfile.flush()

        try:
            creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                send({"declined": "not the server's user"})
                return
            line = rfile.readline(MAX_REQUEST_BYTES + 1)
            if len(line) > MAX_REQUEST_BYTES:
                send({"error": {"type": "InvalidInput", "message": "the load request is too long", "param": None}})
                return
            try:
                request = json.loads(line)
            except ValueError:
                send({"error": {"type": "InvalidInput", "message": "the load request is not JSON", "param": None}})
                return
            if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
                send({"declined": "another version of gis-ioc"})
                return
            if request.get("identity") != identity(self.settings.place):
                send({"declined": "another database or layer folder"})
                return
            try:
                report = self._load(request, send, connection)
            except _ClientGone:
                log.info("load of %s abandoned: the command went away", request.get("file"))
                return
            except GisIocError as err:
                send({"error": {"type": type(err).__name__, "message": err.message, "param": err.param}})
                return
            except Exception as err:  # reported to the command, and logged here with its traceback
                log.exception("load of %s failed", request.get("file"))
                send({"error": {"type": "GisIocError", "message": f"the server's load failed: "
                                f"{type(err).__name__}: {err}", "param": None}})
                return
            send({"report": asdict(report)})
            if report.analyze:  # after the answer: the command does not wait for the statistics
                from gis_ioc.ingest.store import analyze

                analyze(self.engine, self.catalog.get(report.layer))
        except OSError:
            return  # the command went away

    def _load(self, request: dict[str, Any], send: Callable[[dict[str, Any]], None],
              connection: socket.socket) -> LoadReport:
        from gis_ioc import ingest

        texts = {k: request.get(k) for k in ("file", "layer", "crs", "mode", "source_layer")}
        for name, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise errors.InvalidInput(f"{name}: a text is expected", param=name)
        options = {k: request.get(k) or {} for k in ("map", "set")}
        for name, pairs in options.items():
            if not isinstance(pairs, dict) or not all(isinstance(v, str) for v in pairs.values()):
                raise errors.InvalidInput(f"--{name}: pairs of texts are expected", param=name)
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            try:  # a command that went away has closed its end: what it would read is the end of the stream
                if connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    raise _ClientGone("the command went away")
            except (BlockingIOError, InterruptedError):
                pass  # nothing to read: it is waiting for us
            except OSError:
                raise _ClientGone("the command went away") from None
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                try:
                    send({"progress": [done, total]})
                except OSError:
                    raise _ClientGone("the command went away") from None

        with self._one_at_a_time:
            return ingest.load(
                self.engine, self.catalog, str(texts["file"]), str(texts["layer"]), crs=texts["crs"],
                mode=texts["mode"] or "append", mapping=options["map"], constants=options["set"],
                strict=bool(request.get("strict")), ignore_unknown=bool(request.get("ignore_unknown")),
                cascade=bool(request.get("cascade")), source_layer=texts["source_layer"],
                region=self.settings.region_extent, progress=progress, analyze_after=False,
            )


@contextlib.contextmanager
def serving(settings: Settings, catalog: Catalog, url: str) -> Iterator[LoadService | None]:
    """The load socket for the life of a server (None when another worker of this home has it)."""
    from gis_ioc import db

    engine = db.make_engine(url, pool_size=1)
    service = LoadService(settings, catalog, engine)
    started = service.start()
    try:
        yield service if started else None
    finally:
        service.stop()
        engine.dispose()
