"""The server process: its connections, and several worker processes behind one port."""

from __future__ import annotations

import asyncio
import socket

import httpx
import sqlalchemy as sa

from gis_ioc import auth, db
from gis_ioc.events import ChangeListener
from gis_ioc.version_board import VersionBoard, highest
from gis_ioc.web.server import nodelay

from .conftest import served
from .test_tiles import CITY, tile_of


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


def test_the_version_board_only_raises_versions_and_is_read_again_when_it_changes(tmp_path):
    board, other = VersionBoard(tmp_path / "run" / "v.json"), VersionBoard(tmp_path / "run" / "v.json")
    assert board.read() == {}
    board.post({"public.incidents": 7, "public.cameras": 2})
    assert other.read() == {"public.incidents": 7, "public.cameras": 2}
    other.post({"public.incidents": 5, "public.cameras": 3})  # a process that read an older version of one
    assert board.read() == {"public.incidents": 7, "public.cameras": 3}
    assert highest({"a": 1, "b": 4}, {"a": 2}) == {"a": 2, "b": 4}


def test_a_process_that_has_not_heard_the_notify_yet_takes_the_version_another_posted(db_url, tmp_path):
    """The board, deterministically: B's listener never hears (its thread is not started), A wrote and posted."""
    engine = db.make_engine(db_url, pool_size=1)
    try:
        a, b = ChangeListener(db_url), ChangeListener(db_url)
        for listener in (a, b):
            listener.board = VersionBoard(tmp_path / "versions.json")
            listener.connected.set()  # as if listening, but deaf: no thread
        with engine.begin() as conn:  # a write by another connection: the version goes up, a NOTIFY goes out
            conn.execute(sa.text("INSERT INTO incidents (type, title, source, geom) VALUES ('fire', 'board', 'app', "
                                 "ST_SetSRID(ST_MakePoint(108.003, 14.35), 4326))"))
        a.reload_versions(engine)  # what ReadYourWrites does before answering the write
        with engine.connect() as conn:
            now = conn.execute(sa.text("SELECT version FROM layer_versions WHERE table_name = 'public.incidents'")
                               ).scalar_one()
        seen = b.versions()
        assert seen is not None and seen["public.incidents"] == now > 0
    finally:
        engine.dispose()


def test_two_worker_processes_answer_a_clients_next_tile_with_its_own_write(db_url, tmp_path):
    """Issue 14: a write answered by one worker; the tile asked at once on new connections (either worker).

    On an idle machine the other worker usually hears the NOTIFY first anyway; the test above shows the board
    covers the moment it has not.
    """
    engine = db.make_engine(db_url, pool_size=1)
    key = auth.create_key(engine, "workers-operator", "operator")
    engine.dispose()
    z, x, y = 15, *tile_of(*CITY, 15)
    path = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    with served(db_url, tmp_path / "home", env={"GIS_IOC_WORKERS": "2", "GIS_IOC_WARM_TILES": "false"}) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as writer:
        for n in range(12):
            before = {httpx.get(base + path, timeout=30).content for _ in range(6)}  # both workers cache it
            assert len(before) == 1
            feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + n * 1e-4, CITY[1]]},
                       "properties": {"type": "fire", "title": f"workers {n}", "source": "app"}}
            assert writer.post("/collections/incidents/items", json=feature).status_code == 201
            after = [httpx.get(base + path, timeout=30) for _ in range(4)]  # new connections: either worker
            assert all(r.status_code == 200 and r.content not in before for r in after), n
