"""Read replicas: reads go to a streaming standby that has replayed every write this service knows of.

PostgreSQL's own machinery does the copying (streaming replication); this module only chooses where a read
goes. A thread samples the primary's WAL position and each replica's replayed position twenty times a second.
A replica is read from when it is reachable, still a standby or promoted, less than ``max_lag_ms`` behind
(the time since the primary first wrote WAL the replica has not replayed; an idle primary is no lag), and has
replayed at least the *floor*: the primary's WAL position when this process last heard of a change (NOTIFY)
or after a write of any process of this machine (``ChangeListener.wal_floor``). So a client reads its own
writes, and a tile is never made from data older than the layer versions the wall was told about. When no
replica qualifies, the primary answers. While the primary is away, replicas that had replayed the floor keep
answering reads (nothing newer can have been acknowledged).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gis_ioc import db

log = logging.getLogger(__name__)
CHECK_S = 0.05  # how often positions are sampled (a read right after a write goes to the primary until then)
KEEP_SAMPLES = 2400  # primary positions kept for the lag (two minutes at CHECK_S)
# a server's WAL position: what it has written, or on a standby what it has replayed
POSITION_SQL = ("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                "ELSE pg_current_wal_lsn() END::text")


def lsn(text: str | None) -> int:
    """A WAL position (``16/B374D848``) as a number; 0 for none."""
    if not text:
        return 0
    high, _, low = str(text).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class Replica:
    """One standby: its engine and what the last check found."""

    name: str  # host:port/database, no password
    engine: Engine
    replayed: int = 0
    lag_ms: float = float("inf")
    reachable: bool = False
    standby: bool = True
    error: str | None = None

    def status(self) -> dict[str, Any]:
        """What /health says of it."""
        return {"replica": self.name, "reachable": self.reachable, "standby": self.standby,
                "lag_ms": None if self.lag_ms == float("inf") else round(self.lag_ms, 1),
                "replayed": f"{self.replayed >> 32:X}/{self.replayed & 0xFFFFFFFF:X}", "error": self.error}


@dataclass
class _Primary:
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=KEEP_SAMPLES))
    reachable: bool = True


class ReadRouter:
    """Where each read goes: a replica that qualifies (round robin), else the primary."""

    def __init__(self, primary: Engine, primary_url: str, urls: list[str], max_lag_ms: int, pool_size: int,
                 floor: Callable[[], int] = lambda: 0, check_s: float = CHECK_S) -> None:
        self.primary = primary
        # the checks keep a connection of their own: never one the requests wait for
        self._primary_check = db.make_engine(primary_url, pool_size=1) if urls else primary
        self.max_lag_ms = max_lag_ms
        self.floor = floor
        self.check_s = check_s
        self.replicas = [Replica(_name(u), db.make_engine(u, pool_size)) for u in urls]
        self._primary = _Primary()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gis-ioc-replicas", daemon=True)
        self.reads = {"primary": 0, **{r.name: 0 for r in self.replicas}}

    def start(self) -> None:
        """Start checking (a first check runs before this returns, so reads can go to replicas at once)."""
        if self.replicas:
            self.check()
            self._thread.start()

    def stop(self) -> None:
        """Stop checking and close the replicas' connections."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for replica in self.replicas:
            replica.engine.dispose()
        if self._primary_check is not self.primary:
            self._primary_check.dispose()

    def usable(self) -> list[Replica]:
        """The replicas a read may go to now."""
        floor = self.floor()
        return [r for r in self.replicas
                if r.reachable and r.replayed >= floor and (r.lag_ms <= self.max_lag_ms or not self._primary.reachable)]

    def engine(self) -> Engine:
        """The engine for one read."""
        if not self.replicas:
            return self.primary
        usable = self.usable()
        if not usable:
            self.reads["primary"] += 1
            return self.primary
        chosen = usable[next(self._turn) % len(usable)]
        self.reads[chosen.name] += 1
        return chosen.engine

    def status(self) -> list[dict[str, Any]]:
        """Each replica's state, and whether reads go to it now."""
        usable = {id(r) for r in self.usable()}
        return [{**r.status(), "reading": id(r) in usable, "reads": self.reads[r.name]} for r in self.replicas]

    # -- checking ---------------------------------------------------------------------------
    def check(self) -> None:
        """Sample the primary's position, then each replica's replayed position and lag."""
        now = time.monotonic()
        try:
            with self._primary_check.connect() as conn:
                position = lsn(conn.execute(sa.text(POSITION_SQL)).scalar())
            samples = self._primary.samples
            if not samples or samples[-1][1] != position:
                samples.append((now, position))
            self._primary.reachable = True
        except sa.exc.SQLAlchemyError:
            self._primary.reachable = False
        for replica in self.replicas:
            try:
                with replica.engine.connect() as conn:
                    standby, replayed, current = conn.execute(sa.text(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
                        "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END")).one()
                replica.standby = bool(standby)
                replica.replayed = lsn(replayed if standby else current)
                replica.reachable, replica.error = True, None
            except sa.exc.SQLAlchemyError as err:
                replica.reachable = False
                replica.error = str(getattr(err, "orig", err)).strip().splitlines()[0][:200]
            replica.lag_ms = self._lag_ms(replica.replayed, now)

    def _lag_ms(self, replayed: int, now: float) -> float:
        """Since when the primary has had WAL the replica has not replayed (0 when it has replayed it all)."""
        behind = [t for t, position in self._primary.samples if position > replayed]
        if not behind:
            return 0.0 if self._primary.samples else float("inf")
        return (now - behind[0]) * 1000

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the checker must outlive any one failure
                log.exception("replica check failed")


def _name(url: str) -> str:
    parsed = sa.engine.make_url(db.sqlalchemy_url(url))
    hosts = parsed.query.get("host")
    where = ",".join(hosts) if isinstance(hosts, tuple) else hosts or f"{parsed.host}:{parsed.port or 5432}"
    return f"{where}/{parsed.database}"
