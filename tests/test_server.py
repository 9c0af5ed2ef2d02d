"""The server process: its connections, and several worker processes behind one port."""

from __future__ import annotations

import asyncio
import socket

from gis_ioc.web.server import nodelay


def test_connections_accepted_on_a_socket_bound_as_uvicorn_workers_bind_it_get_tcp_nodelay():
    """Issue 14: uvicorn --workers binds ``socket.socket(family)`` (proto 0), and asyncio then leaves Nagle on."""

    async def accepted_option() -> tuple[int, int]:
        listening = socket.socket(socket.AF_INET)  # as uvicorn's Config.bind_socket makes it
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", 0))
        seen: dict[str, int] = {}
        made = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
                sock = transport.get_extra_info("socket")
                seen["before"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                nodelay(transport)
                seen["after"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                made.set()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        try:
            _, writer = await asyncio.open_connection(*listening.getsockname())
            await asyncio.wait_for(made.wait(), 5)
            writer.close()
        finally:
            server.close()
        return seen["before"], seen["after"]

    _, after = asyncio.run(accepted_option())  # before: 0 with Python 3.12 and uvicorn 0.5x
    assert after != 0

