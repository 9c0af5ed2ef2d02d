"""Running the app under uvicorn: uvloop and httptools, no ``server`` banner, and limits on each request's head.

uvloop (the event loop) and httptools (llhttp, the parser Node.js uses) are uvicorn's fast choices: the same
requests take less of the two cores than on asyncio's loop and h11. Two limits uvicorn does not have are added
by ``HeaderDeadline``, its httptools protocol with:

- a deadline: the line and headers of a request must arrive within ``GIS_IOC_HEADER_TIMEOUT_S`` of its first
  byte (or of the connection); past it the connection gets a 408 and is closed. uvicorn's keep-alive timeout
  is reset by every byte, so a client sending a request a byte at a time would hold a connection forever
  (slowloris);
- a size: the line and headers of a request may take ``MAX_HEAD_BYTES``; past it the connection gets a 431 and
  is closed (llhttp sets no limit of its own, so the head would grow for as long as the deadline lets it);
- a bound on answers nobody reads: what the client has not read of an answer (written whole, or a streamed one
  piece by piece) stays in the connection's buffer. A connection whose client reads nothing for ``GIS_IOC_SEND_STALL_S``
  is dropped, and so is the one that stopped reading first whenever such connections hold more than
  ``GIS_IOC_MAX_UNREAD_MB`` in the process: a crowd that asks for big pages and reads none cannot hold the
  process's memory.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gis_ioc.settings import Settings

# An idle keep-alive connection is closed after this long: longer than clients keep theirs idle (httpx 5 s,
# requests and GDAL reuse at once), so the client, not the server, closes first and no request is sent into
# a connection the server is closing (uvicorn's 5 s equalled httpx's and lost the race now and then).
KEEP_ALIVE_S = 20
# The request line and headers may take this much: a parameter may hold 16,384 characters
# (limits.MAX_FILTER_CHARS), and one of Vietnamese text or other non-ASCII letters is up to nine URL bytes a
# character, so such a request reaches the route, whose 400 names the parameter.
MAX_HEAD_BYTES = 512 * 1024
URL_PARSER_MAX = 65_535  # httptools.parse_url keeps offsets in 16 bits
# an answer that holds scarce things while it is sent (a streamed page: a heavy-work place and a connection)
# sets request.state.<this> to be dropped sooner when its client stops reading
SEND_STALL_KEY = "send_stall_s"


@functools.cache
def _header_timeout() -> float:
    return Settings().header_timeout_s


@functools.cache
def _unread_limits() -> tuple[float, int]:
    settings = Settings()
    return settings.send_stall_s, settings.max_unread_mb * 1024 * 1024


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


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol, with limits on each request's head and on answers left unread."""

    # connections of this process whose client stopped reading (the transport paused writing), oldest first
    stalled: ClassVar[dict[HeaderDeadline, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _header_timeout()
        self.send_stall_s, self.max_unread_bytes = _unread_limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes received since the last request's headers were complete
        self._in_body = False  # between a request's headers and its end: its bytes are not head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: no Nagle delay on it, and its first request's headers are due in time."""
        nodelay(transport)
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes of a new request start its deadline; its headers complete (a new cycle) stop it."""
        if not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "Request Header Fields Too Large", "request_too_large",
                             f"the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB")
                return
        before = self.cycle
        if before is None or before.response_complete:
            self._arm()
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:
            self._disarm()

    def on_headers_complete(self) -> None:
        """The head is complete: what follows up to the request's end is its body.

        httptools' URL parser counts in 16 bits (at most 65,535 bytes), and a query may be longer (see
        ``MAX_HEAD_BYTES``): such a URL is parsed without its query, which the scope then gets as it came.
        """
        self._head_bytes, self._in_body = 0, True
        path, _, query = self.url.partition(b"?")
        long_query = len(self.url) > URL_PARSER_MAX and len(path) <= URL_PARSER_MAX
        if long_query:
            self.url = path
        super().on_headers_complete()
        if long_query and self.scope.get("path") is not None:  # the request's task has not run yet
            self.scope["query_string"] = query

    def on_message_complete(self) -> None:
        """The request is complete: the next bytes are the next request's head."""
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """The keep-alive timeout takes over until the next request's first byte."""
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing more to wait for."""
        self._disarm()
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client reads slower than the answer is written: it has ``send_stall_s`` to read again."""
        super().pause_writing()
        if self._stall is None:
            stall = self._stall_of_answer()
            self._stall = self.loop.call_later(stall, self._drop, f"read nothing for {stall:g} s")
            HeaderDeadline.stalled[self] = None
        self._keep_unread_within_budget()

    def _stall_of_answer(self) -> float:
        """How long this answer may wait for its client: the app may ask less (``request.state.send_stall_s``)."""
        state = self.cycle.scope.get("state") if self.cycle is not None else None
        asked = state.get(SEND_STALL_KEY) if isinstance(state, dict) else None
        return min(self.send_stall_s, float(asked)) if isinstance(asked, int | float) else self.send_stall_s

    def resume_writing(self) -> None:
        """The client reads again."""
        self._unstall()
        super().resume_writing()

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        HeaderDeadline.stalled.pop(self, None)

    def _keep_unread_within_budget(self) -> None:
        """Drop the connections that stopped reading first until the rest hold at most ``max_unread_bytes``."""
        held = sum(p.transport.get_write_buffer_size() for p in HeaderDeadline.stalled)
        while held > self.max_unread_bytes and HeaderDeadline.stalled:
            oldest = next(iter(HeaderDeadline.stalled))
            held -= oldest.transport.get_write_buffer_size()
            oldest._drop(f"left answers unread past the process's {self.max_unread_bytes // 1048576} MiB")

    def _drop(self, why: str) -> None:
        """Close a connection at once, its unsent bytes thrown away (the client did not read them)."""
        self._unstall()
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            self.logger.info("dropping a connection whose client %s", why)
            self.transport.abort()

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
            self._refuse(408, "Request Timeout", "request_timeout", "the request line and headers came too slowly")

    def _refuse(self, status: int, reason: str, code: str, description: str) -> None:
        """Answer the request being received with a JSON error, and close the connection."""
        self._disarm()
        body = json.dumps({"code": code, "description": description}).encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body))
        self.transport.close()


def run(host: str, port: int, workers: int) -> None:
    """Serve ``create_app`` with the service's protocol and without a server banner."""
    uvicorn.run("gis_ioc.web.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", http=HeaderDeadline, loop="uvloop", server_header=False,
                timeout_keep_alive=KEEP_ALIVE_S)
