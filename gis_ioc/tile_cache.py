"""The tile cache: tiles in memory and on disk under ``GIS_IOC_HOME/tiles``, keyed by layer versions.

A tile's key names the versions of its layers (``public.incidents@57+public.cameras@12``), so a tile of a
version that is gone is never served, and is removed as soon as newer tiles come in (``gis_ioc.tiles``
makes the tiles; this module keeps them).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from isal import igzip

# Tiles are gzipped with ISA-L (python-isal), which writes the same gzip format as zlib about 2.7 times as
# fast: its level 2 took 0.18 ms a tile of the scale-100 bench list where zlib's level 1 took 0.48 ms, for
# the same size (44 % of the MVT). Compressing was the largest single CPU cost of an uncached tile.
# Archives (tiles export) use zlib's level 6, made once.
GZIP_LEVEL = 2


@dataclass(frozen=True)
class Tile:
    """A tile's bytes (uncompressed MVT), gzip-compressed bytes, and its ETag."""

    data: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def made(cls, key: str, data: bytes) -> Tile:
        """A tile just made: its bytes, compressed once, and the ETag its key gives."""
        return cls(data, igzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0), _etag(key))


def _etag(key: str) -> str:
    return f'"{key.rsplit("/", 1)[-1]}"'


def _stale(tag: str, current: Mapping[str, int]) -> bool:
    """Whether a cache tag (``public.incidents@57+public.cameras@12``) names a version that is no longer current."""
    for part in tag.split("+"):
        table, _, version = part.rpartition("@")
        if table in current and str(current[table]) != version:
            return True
    return False


def database_folder(conn: Any) -> str:
    """The cache's folder for the database ``conn`` is on (its name, and a digest of its server and oid).

    Layer versions count per database: two databases served from one home (or one dropped and made again, a
    new oid) must never read each other's tiles.
    """
    host, port, name, oid = conn.execute(sa.text(
        "SELECT coalesce(inet_server_addr()::text, 'local'), coalesce(inet_server_port(), 0), current_database(), "
        "(SELECT oid FROM pg_database WHERE datname = current_database())")).one()
    digest = hashlib.sha256(f"{host}|{port}|{name}|{oid}".encode()).hexdigest()[:12]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', name)[:40]}-{digest}"


class TileCache:
    """Tiles in memory and on disk, keyed by layer versions.

    In memory, tiles of versions that are gone go out as soon as a newer tile comes in, then the least
    recently used beyond ``max_bytes``.

    On disk a tile lives under the versions it was made from (``public.incidents@57/ab/ab12….mvt.gz``), so
    when the disk passes ``max_disk_bytes`` a background pruning removes the tiles of old versions first,
    then the least recently used (a disk hit refreshes a file's time), down to 90 % of the limit.
    """

    def __init__(self, folder: Path | None, max_bytes: int = 256 * 1024 * 1024, max_disk_bytes: int = 1 << 30,
                 current: Callable[[], Mapping[str, int] | None] | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.current = current or (lambda: None)
        self._memory: OrderedDict[str, Tile] = OrderedDict()
        self._tags: dict[str, set[str]] = {}  # the keys in memory of each set of layer versions
        self._size = 0
        self._lock = threading.Lock()
        self._disk = 0  # bytes on disk as this process counts them (measured when it prunes)
        self._pruning = threading.Lock()
        if folder is not None and folder.is_dir():
            self._prune_later()  # learn the size left by earlier runs

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        tag, digest = key.split("/", 1)
        return self.folder / tag / digest[:2] / f"{digest}.mvt.gz"

    def get(self, key: str) -> Tile | None:
        """A cached tile, from memory or disk."""
        with self._lock:
            tile = self._memory.get(key)
            if tile is not None:
                self._memory.move_to_end(key)
                return tile
        if self.folder is not None:
            path = self._path(key)
            try:
                gzipped = path.read_bytes()
            except OSError:
                return None
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > 60:
                    os.utime(path)  # recently used: the last to be pruned
            tile = Tile(igzip.decompress(gzipped), gzipped, _etag(key))
            self._remember(key, tile)
            return tile
        return None

    def put(self, key: str, data: bytes) -> Tile:
        """Keep a tile (and its gzip bytes) in memory and on disk."""
        tile = Tile.made(key, data)
        self._remember(key, tile)
        if self.folder is not None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            # one temporary name per writer: two requests may make the same tile at once
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(tile.gzipped)
            tmp.replace(path)
            self._disk += len(tile.gzipped)
            if self._disk > self.max_disk_bytes:
                self._prune_later()
        return tile

    def _remember(self, key: str, tile: Tile) -> None:
        tag = key.split("/", 1)[0]
        current = self.current()
        with self._lock:
            if key in self._memory:
                return
            if current is not None:  # tiles of layer versions that are gone never serve again: out first
                for stale in [t for t in self._tags if t != tag and _stale(t, current)]:
                    for old_key in self._tags.pop(stale):
                        self._forget(old_key)
            self._memory[key] = tile
            self._tags.setdefault(tag, set()).add(key)
            self._size += len(tile.data) + len(tile.gzipped)
            while self._size > self.max_bytes and self._memory:
                old_key = next(iter(self._memory))
                self._tags.get(old_key.split("/", 1)[0], set()).discard(old_key)
                self._forget(old_key)

    def _forget(self, key: str) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._size -= len(old.data) + len(old.gzipped)

    def _prune_later(self) -> None:
        if self._pruning.acquire(blocking=False):
            threading.Thread(target=self._prune_once, name="gis-ioc-tile-prune", daemon=True).start()

    def _prune_once(self) -> None:
        try:
            self.prune()
        except OSError as err:  # a pruning problem must never reach a request
            logging.getLogger("gis_ioc.tiles").warning("tile cache pruning stopped: %s", err)
        finally:
            self._pruning.release()

    def prune(self) -> int:
        """Bring the disk under its limit: old versions first, then the least recently used. Bytes removed."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        current = self.current()
        removed = 0
        files: list[tuple[float, int, Path]] = []
        for tag_dir in list(self.folder.iterdir()):
            if not tag_dir.is_dir():
                continue
            found = [(info.st_mtime, info.st_size, f) for f in tag_dir.glob("*/*.mvt.gz") if (info := f.stat())]
            if current is not None and _stale(tag_dir.name, current):
                shutil.rmtree(tag_dir, ignore_errors=True)
                removed += sum(size for _, size, _ in found)
            else:
                files += found
        total = sum(size for _, size, _ in files)
        if total > self.max_disk_bytes:
            goal = int(self.max_disk_bytes * 0.9)
            for _, size, path in sorted(files):
                if total <= goal:
                    break
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size
                    removed += size
        self._disk = total
        return removed
