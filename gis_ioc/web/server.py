"""Running the app under uvicorn: no ``server`` banner, and a deadline for each request's line and headers.

uvicorn has no such deadline (its keep-alive timeout is reset by every byte), so a client sending a
request a byte at a time would hold a connection forever (slowloris). ``HeaderDeadline`` is uvicorn's
h11 protocol with one: the line and headers of a request must arrive within ``GIS_IOC_HEADER_TIMEOUT_S``
of its first byte (or of the connection); past it the connection gets a 408 and is closed.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gis_ioc.settings import Settings

# An idle keep-alive connection is closed after this long: longer than clients keep theirs idle (httpx 5 s,
# requests and GDAL reuse at once), so the client, not the server, closes first and no request is sent into
# a connection the server is closing (uvicorn's 5 s equalled httpx's and lost the race now and then).
KEEP_ALIVE_S = 20
# The request line and headers may take this much (h11's default is 16 KiB): a parameter may hold 16,384
# characters (limits.MAX_FILTER_CHARS), and one of Vietnamese text or other non-ASCII letters is up to nine
# URL bytes a character. Past h11's limit uvicorn closes the connection while the client still sends, which
# the client sees as a reset instead of the 400 naming the parameter.
MAX_HEAD_BYTES = 512 * 1024


@functools.cache
def _header_timeout() -> float:
    return Settings().header_timeout_s


def nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on a TCP connection.

    asyncio sets it only on sockets whose ``proto`` is TCP; with ``--workers`` uvicorn binds the listening
    socket itself as ``socket.socket(family)`` (``proto`` 0), so the connections its workers accept kept Nagle's
    algorithm: a response written in two parts (headers, then body) waited for the client's delayed ACK, about
    40 ms on Linux (uvicorn issue 3149).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone
            pass


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for the line and headers of every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _header_timeout()
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: no Nagle delay on it, and its first request's headers are due in time."""
        nodelay(transport)
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes of a new request start its deadline; its headers complete (a new cycle) stop it."""
        before = self.cycle
        if before is None or before.response_complete:
            self._arm()
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:
            self._disarm()

    def on_response_complete(self) -> None:
        """The keep-alive timeout takes over until the next request's first byte."""
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing more to wait for."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting:
            self.logger.info("closing a connection whose request headers took over %ss", self.header_timeout)
            body = b'{"code":"request_timeout","description":"the request line and headers came too slowly"}'
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()


def run(host: str, port: int, workers: int) -> None:
    """Serve ``create_app`` with the service's protocol and without a server banner."""
    uvicorn.run("gis_ioc.web.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", http=HeaderDeadline, server_header=False, timeout_keep_alive=KEEP_ALIVE_S,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES)
