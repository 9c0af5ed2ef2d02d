"""gzip of JSON, GeoJSON, CSV and HTML answers: Starlette's ``GZipMiddleware``, deflating with ISA-L at levels 1–3.

ISA-L (python-isal, which the tile cache already uses) writes the same gzip format as zlib. On this project's
own answers, zlib's level 1 against ISA-L's level 1 (one core of the 2-core bench machine):

- a page of 1,000 incidents (720 kB of GeoJSON): 3.8 ms and 102 kB against 0.56 ms and 94 kB;
- the same page as CSV (350 kB): 2.5 ms and 86 kB against 0.45 ms and 79 kB;
- a route by road (5.5 kB): 25–78 µs and 2,061 B against 14 µs and 1,900 B.

ISA-L has levels 0–3 only, so ``GIS_IOC_GZIP_LEVEL`` 1–3 are ISA-L's and 4–9 stay zlib's (smaller, slower).
Everything else is Starlette's: which answers are compressed (at least ``minimum_size``, not event streams,
not tiles, which carry their own ``Content-Encoding``), ``Vary``, and pages over 128 KiB compressed in a
worker thread.
"""

from __future__ import annotations

import zlib
from typing import Any

from isal import isal_zlib
from starlette.datastructures import Headers
from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.types import Receive, Scope, Send

ISAL_LEVELS = 3  # ISA-L's highest level; above it, zlib


def compressor(level: int) -> Any:
    """A gzip stream compressor at ``level``: ISA-L's for 1–3 (0 too), zlib's for 4–9."""
    lib: Any = isal_zlib if level <= ISAL_LEVELS else zlib
    return lib.compressobj(level, lib.DEFLATED, 16 + lib.MAX_WBITS)


class _Responder(GZipResponder):
    @property
    def compressor(self) -> Any:
        if self._compressor is None:
            self._compressor = compressor(self.compresslevel)
        return self._compressor


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip: named (or ``*``) with a quality above 0 (RFC 9110)."""
    named: float | None = None
    anything: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            named = quality
        elif coding == "*":
            anything = quality
    chosen = named if named is not None else anything
    return chosen is not None and chosen > 0


class GZip(GZipMiddleware):
    """``GZipMiddleware`` whose gzip answers deflate with ``compressor``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer through a gzip responder when the client accepts gzip, else an identity one."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # as GZipMiddleware.__call__ chooses, with this module's responder for clients that accept gzip
        responder: IdentityResponder
        if accepts_gzip(Headers(scope=scope).get("Accept-Encoding", "")):
            responder = _Responder(self.app, self.minimum_size, compresslevel=self.compresslevel,
                                   thread_minimum_size=self.thread_minimum_size,
                                   exclude_content_types=self.exclude_content_types)
        else:
            responder = IdentityResponder(self.app, self.minimum_size, exclude_content_types=self.exclude_content_types)
        await responder(scope, receive, send)
