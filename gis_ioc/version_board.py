"""Layer versions shared by the server processes of one machine, so a client reads its own writes on any of them.

Tiles are cached by layer version, and each process learns a new version from the NOTIFY its listener hears a
moment after the commit. A client whose write one process answered may send its next request to another
process (``GIS_IOC_WORKERS``, or several ``gis-ioc serve`` behind a proxy) before that one has heard it. So
the process that wrote posts the versions it read after the write here, before it answers; every process
takes the larger of its listener's version and the board's. The board is a small JSON file per database
(under ``GIS_IOC_HOME/run``), written under a lock and renamed into place, read again only when it changed
(a ``stat`` per read). With read replicas it also carries the primary's WAL position after the latest write,
which a replica must have replayed before a read goes to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

WAL = "~wal"  # the board's entry for the primary's WAL position after the latest write (not a table)


class VersionBoard:
    """The highest layer version any process of this machine has posted, per table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._versions: dict[str, int] = {}
        self._wal = 0
        self._lock = threading.Lock()

    def read(self) -> Mapping[str, int]:
        """The versions posted (re-read only when the file changed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            with self._lock:
                try:
                    found = json.loads(self.path.read_text())
                except (FileNotFoundError, ValueError):  # replaced meanwhile: the next read takes the new one
                    return self._versions
                self._versions = {str(t): int(v) for t, v in found.items() if isinstance(v, int) and t != WAL}
                self._wal = int(found.get(WAL, 0)) if isinstance(found.get(WAL, 0), int) else 0
                self._seen = stamp
        return self._versions

    def wal(self) -> int:
        """The highest primary WAL position posted after a write (``replicas``: what a replica must have replayed)."""
        self.read()
        return self._wal

    def post(self, versions: Mapping[str, int], wal: int = 0) -> None:
        """Raise the board's versions to these, and its WAL position to ``wal`` (never lowers one)."""
        versions = {**versions, WAL: wal} if wal else dict(versions)
        if not versions:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            try:
                board = {str(t): int(v) for t, v in json.loads(self.path.read_text()).items()}
            except (FileNotFoundError, ValueError):
                board = {}
            merged = {**board, **{t: max(v, board.get(t, 0)) for t, v in versions.items()}}
            if merged == board:
                return
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(merged, sort_keys=True))
            os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def highest(*sources: Mapping[str, int]) -> dict[str, int]:
    """Per table, the highest version any of ``sources`` knows."""
    merged: dict[str, int] = {}
    for versions in sources:
        for table, version in versions.items():
            if version > merged.get(table, -1):
                merged[table] = version
    return merged
