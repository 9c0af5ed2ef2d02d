"""The loop lane (gis_ioc.db_loop): prepared statements on psycopg2's asynchronous connection, never waited for."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg2.errors
import pytest
import sqlalchemy as sa

from gis_ioc import db
from gis_ioc.db_loop import LoopLane
from gis_ioc.errors import QueryTimeout, from_database

PLANS = ("SELECT count(*) AS n, coalesce(sum(custom_plans), 0) AS custom, coalesce(sum(generic_plans), 0) AS generic "
         "FROM pg_prepared_statements WHERE :x = 1")


def _lane(engine: sa.Engine, db_url: str) -> LoopLane:
    return LoopLane(db_url, engine.dialect)


def test_the_lane_gives_the_rows_db_rows_gives_planned_once(engine, db_url):
    sql = "SELECT CAST(:a AS int) + 1 AS b, CAST(:t AS text) || '!' AS t, ST_AsText(ST_MakePoint(:x, :y)) AS wkt"
    values = {"a": 41, "t": "xin chào", "x": 108.0, "y": 14.35}
    with db.autocommit(engine) as conn:
        expected = db.rows(conn, sql, values, first=True, prepare=True)

    async def run() -> tuple[list, list, list]:
        lane = _lane(engine, db_url)
        try:
            first = await lane.run(sql, values)
            second = await lane.run(sql, {**values, "a": 1})
            plans = await lane.run(PLANS, {"x": 1})
        finally:
            lane.close()
        assert first is not None and second is not None and plans is not None
        return first, second, plans

    first, second, plans = asyncio.run(run())
    assert first == expected and second[0].b == 2
    # the statement and this one, each prepared once; the statement ran twice on its generic plan
    assert (plans[0].n, plans[0].custom, plans[0].generic) == (2, 0, 3)


def test_the_request_budget_sets_the_timeout_and_a_failure_takes_the_connection(engine, db_url):
    async def run() -> None:
        lane = _lane(engine, db_url)
        try:
            token = db.BUDGET.set(db.Budget(150))
            try:
                with pytest.raises(psycopg2.errors.QueryCanceled) as caught:
                    await lane.run("SELECT pg_sleep(:s) AS slept", {"s": 3})
                assert isinstance(from_database(caught.value), QueryTimeout)
            finally:
                db.BUDGET.reset(token)
            assert lane._raw is None  # its session is not known any more: gone
            for timeout, shown in ((None, "0"), (5000, "5s"), (5000, "5s"), (None, "0")):
                token = db.BUDGET.set(db.Budget(timeout) if timeout else None)
                try:
                    found = await lane.run("SELECT current_setting('statement_timeout') AS t WHERE :x = 1", {"x": 1})
                finally:
                    db.BUDGET.reset(token)
                assert found is not None and found[0].t == shown
        finally:
            lane.close()

    asyncio.run(run())


def test_a_busy_lane_makes_nobody_wait_and_a_closed_one_takes_nothing(engine, db_url):
    async def run() -> None:
        lane = _lane(engine, db_url)
        slow = asyncio.create_task(lane.run("SELECT pg_sleep(:s) AS slept", {"s": 0.5}))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await lane.run("SELECT CAST(:x AS int) AS x", {"x": 1}) is None  # busy: the caller takes the pool
        assert time.monotonic() - started < 0.1
        assert await slow is not None
        assert (await lane.run("SELECT CAST(:x AS int) AS x", {"x": 1}))[0].x == 1  # type: ignore[index]
        lane.close()
        assert await lane.run("SELECT CAST(:x AS int) AS x", {"x": 1}) is None

    asyncio.run(run())


def test_a_request_cancelled_or_left_stops_its_statement_on_the_server(engine, db_url):
    def sleeping(until_none: bool = False) -> int:
        """Statements of the lane running on the server (``until_none``: waiting up to 5 s for none)."""
        deadline = time.monotonic() + 5
        while True:
            with engine.connect() as conn:
                found = int(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
                    "'%EXECUTE gis_ioc_%' AND pid <> pg_backend_pid() AND datname = current_database()")).scalar_one())
            if not until_none or found == 0 or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    async def run() -> None:
        lane = _lane(engine, db_url)
        try:
            task = asyncio.create_task(lane.run("SELECT pg_sleep(:s) AS slept", {"s": 30}))
            await asyncio.sleep(0.3)
            assert await asyncio.to_thread(sleeping) == 1
            task.cancel()  # the request's task is cancelled (the server stopping, say)
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.1  # the loop did not wait for libpq's cancel
            assert await asyncio.to_thread(sleeping, True) == 0
            budget = db.Budget(60_000)  # the client leaves: the guard cancels what its budget holds
            token = db.BUDGET.set(budget)
            try:
                threading.Timer(0.3, budget.cancel).start()
                with pytest.raises(psycopg2.errors.QueryCanceled):
                    await lane.run("SELECT pg_sleep(:s) AS slept", {"s": 30})
            finally:
                db.BUDGET.reset(token)
            assert await asyncio.to_thread(sleeping, True) == 0
            assert (await lane.run("SELECT CAST(:x AS int) AS x", {"x": 7}))[0].x == 7  # type: ignore[index]
        finally:
            lane.close()

    asyncio.run(run())


def test_a_lane_that_cannot_connect_hands_the_request_back(engine):
    async def run() -> None:
        lane = LoopLane("postgresql://nobody@127.0.0.1:1/none", engine.dialect)
        started = time.monotonic()
        assert await lane.run("SELECT CAST(:x AS int) AS x", {"x": 1}) is None
        assert time.monotonic() - started < db.CONNECT_TIMEOUT_S + 1
        started = time.monotonic()
        assert await lane.run("SELECT CAST(:x AS int) AS x", {"x": 1}) is None  # not tried again at once
        assert time.monotonic() - started < 0.01

    asyncio.run(run())


def test_a_kept_connection_that_is_gone_is_made_again_unnoticed(engine, db_url):
    async def run() -> None:
        lane = _lane(engine, db_url)
        try:
            first = await lane.run("SELECT pg_backend_pid() AS pid WHERE :x = 1", {"x": 1})
            assert first is not None
            with engine.connect() as conn:  # the server ends the lane's session (a restart, a failover)
                conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first[0].pid})
            await asyncio.sleep(0.2)
            again = await lane.run("SELECT pg_backend_pid() AS pid WHERE :x = 1", {"x": 1})
            assert again is not None and again[0].pid != first[0].pid
        finally:
            lane.close()

    asyncio.run(run())
