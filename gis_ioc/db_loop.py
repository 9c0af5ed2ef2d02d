"""A prepared statement run on the event loop: psycopg2's asynchronous connection, for the hottest reads.

A route by road spends about 3 ms in PostgreSQL. Handed to a worker thread and back, it cost 0.3 ms more
(two thread switches on two cores, and the GIL between the threads): a tenth of the answer. ``LoopLane``
keeps one of psycopg2's asynchronous connections (``async_=True``: the driver sends and reads without
blocking, and the loop waits on its socket) and runs a statement on it as ``db.rows(prepare=True)`` runs it
on a pooled connection:

- the session options, connect timeout and application name of ``db.make_engine``;
- the request's statement timeout (``db.BUDGET``), set in the same message when it differs from the
  connection's; the connection is held in the budget meanwhile, so a client that leaves cancels it;
- the statement prepared on the connection the first time (at most ``db.MAX_PREPARED`` of them), then
  executed with its generic plan (the lane's session is set to it: ``LANE_OPTIONS``).

The lane never makes a request wait: when its connection is busy (or not made yet, or gone), ``run`` returns
None and the caller takes the usual way (a worker thread and the engine's pool). A statement that fails
takes the connection with it (closed, made again on a later call), so no half-known session state is reused;
when the kept connection turns out to be gone (the server restarted), the statement (a read) is tried once
more on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import sqlalchemy as sa

from gis_ioc import db
from gis_ioc.errors import DatabaseUnavailable

log = logging.getLogger("gis_ioc.db_loop")
RETRY_S = 5.0  # a lane that could not connect tries again after this long
# the engine's session options, and the generic plan for the whole session: the lane runs only prepared
# statements (db.rows sets it per statement, SET LOCAL; here that was one more statement in every message)
LANE_OPTIONS = f"{db.SESSION_OPTIONS} -c plan_cache_mode=force_generic_plan"


async def _ready(raw: Any) -> None:
    """Wait on the socket until psycopg2 has sent the statement (or connected) and read the whole answer."""
    loop = asyncio.get_running_loop()
    while True:
        state = raw.poll()  # raises the statement's error
        if state == psycopg2.extensions.POLL_OK:
            return
        fd = raw.fileno()
        woken = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, wake)
            try:
                await woken
            finally:
                loop.remove_reader(fd)
        else:
            loop.add_writer(fd, wake)
            try:
                await woken
            finally:
                loop.remove_writer(fd)


class LoopLane:
    """One asynchronous connection to ``url``, used by one statement at a time; ``run`` never waits for it."""

    def __init__(self, url: str, dialect: sa.engine.Dialect) -> None:
        self.url = url
        self.dialect = dialect
        self._raw: Any = None
        self._prepared: set[str] = set()
        self._timeout_ms: int | None = None
        self._busy = False
        self._closed = False
        self._retry_at = 0.0  # after a failed connect, not before this (time.monotonic)

    async def run(self, sql: str, params: Mapping[str, Any]) -> list[Any] | None:
        """The first row of ``sql`` (``:name`` values), prepared; None when the lane is busy or cannot connect."""
        if self._busy or self._closed:
            return None
        self._busy = True
        try:
            kept = self._raw is not None and not self._raw.closed
            raw = self._raw if kept else await self._connect()
            if raw is None:
                return None
            try:
                return await self._execute(raw, sql, params)
            except DatabaseUnavailable:
                if not kept:
                    raise
            # the kept connection was gone (the server restarted, a failover): the statement reads only, so it
            # is tried once more on a new one
            raw = await self._connect()
            return None if raw is None else await self._execute(raw, sql, params)
        finally:
            self._busy = False

    def close(self) -> None:
        """Close the connection; the lane takes no more statements."""
        self._closed = True
        self._drop()

    async def _connect(self) -> Any:
        """A new connection, or None (tried again ``RETRY_S`` later: meanwhile requests take the worker threads)."""
        self._drop()
        if time.monotonic() < self._retry_at:
            return None
        raw = None
        try:  # libpq resolves the host name as it starts: in a worker thread, never on the loop
            raw = await asyncio.to_thread(psycopg2.connect, self.url, async_=True, options=LANE_OPTIONS,
                                          application_name="gis-ioc")
            await asyncio.wait_for(_ready(raw), db.CONNECT_TIMEOUT_S)
        except (psycopg2.Error, TimeoutError) as err:
            log.warning("the loop lane cannot connect (requests take the worker threads): %s", str(err).strip())
            if raw is not None:
                raw.close()
            self._retry_at = time.monotonic() + RETRY_S
            return None
        self._raw, self._prepared, self._timeout_ms = raw, set(), None
        return raw

    async def _execute(self, raw: Any, sql: str, params: Mapping[str, Any]) -> list[Any]:
        compiled = db.bound(sql, self.dialect)
        prepared = db.prepared(compiled.string)
        budget = db.BUDGET.get()
        timeout = budget.timeout_ms if budget is not None else 0
        if budget is not None:
            budget.hold(raw)
        try:
            with raw.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cur:
                for step in db.preparing(self._prepared, prepared):
                    cur.execute(step)
                    await _ready(raw)
                # the request's timeout, in the same message when it changes (kept by the session)
                setting = f"SET statement_timeout = {int(timeout)}; " if timeout != self._timeout_ms else ""
                cur.execute(setting + prepared.execute, compiled.construct_params(params))
                await _ready(raw)
                found = cur.fetchmany(1)
            self._timeout_ms = timeout
            return list(found)
        except BaseException as err:
            # failed or cancelled on the way: its session is not known any more, so the connection goes; a
            # statement the server may still be running (the request was cancelled) is cancelled there first
            lost = isinstance(err, (psycopg2.OperationalError, psycopg2.InterfaceError)) and bool(raw.closed)
            self._drop(cancel=not isinstance(err, psycopg2.Error))
            if lost:
                raise DatabaseUnavailable("the database connection was lost; try again") from err
            raise
        finally:
            if budget is not None:
                budget.release(raw)

    def _drop(self, cancel: bool = False) -> None:
        raw, self._raw = self._raw, None
        if raw is None or raw.closed:
            return
        if cancel:  # libpq's cancel opens a connection of its own and may wait on the network: not on the loop
            threading.Thread(target=_cancel_and_close, args=(raw,), name="gis-ioc-lane-cancel", daemon=True).start()
        else:
            with contextlib.suppress(psycopg2.Error):
                raw.close()


def _cancel_and_close(raw: Any) -> None:
    """Stop what the connection's server process is running, then close the connection."""
    with contextlib.suppress(psycopg2.Error):
        raw.cancel()
    with contextlib.suppress(psycopg2.Error):
        raw.close()
