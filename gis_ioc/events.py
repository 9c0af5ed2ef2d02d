"""Live changes: PostgreSQL LISTEN/NOTIFY → every server process → server-sent events.

One listener thread per process holds its own connection on the channel ``gis_ioc_changes`` (filled by
the triggers of migration 004), reconnects when the database restarts, numbers the events, keeps the
last few hundred for clients that reconnect with ``Last-Event-ID``, and hands each event to the
subscribers' asyncio queues.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import select
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

from gis_ioc.replicas import POSITION_SQL, lsn
from gis_ioc.version_board import VersionBoard, highest

CHANNEL = "gis_ioc_changes"
VERSIONS = "gis_ioc_versions"  # '<table> <version>' from migration 006
KEEP = 500
QUEUE = 1000  # changes a client may be behind before it is told to reload
log = logging.getLogger("gis_ioc.events")


@dataclass(frozen=True)
class Change:
    """One change: a sequence number (the SSE id), the layer, the feature id and the operation."""

    seq: int
    layer: str
    op: str
    id: Any = None
    feature: Any = None  # the new row as a GeoJSON Feature, when it fitted in the message


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Change] = field(default_factory=lambda: asyncio.Queue(maxsize=QUEUE))


@dataclass
class Subscription:
    """A subscriber's queue, the changes it missed, whether some could not be replayed, and where it starts."""

    subscriber: _Subscriber
    missed: list[Change]
    lost: bool
    position: int  # the last change number when it subscribed


class ChangeListener:
    """LISTEN on the changes channel in a thread; fan the changes out to subscribers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._seq = 0
        self._recent: deque[Change] = deque(maxlen=KEEP)
        self._subscribers: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gis-ioc-listen", daemon=True)
        self.connected = threading.Event()
        self.connections = 0  # how often LISTEN was (re)established
        self._versions: dict[str, int] = {}
        self._wal = 0  # the primary's WAL position after the latest change heard (replicas.lsn)
        self.board: VersionBoard | None = None  # the versions other processes of this machine wrote
        self._merged: tuple[tuple[Mapping[str, int] | None, Mapping[str, int] | None], Mapping[str, int]] = (
            (None, None), {})
        self.epoch = secrets.token_hex(4)  # event ids of another process (before a restart) are told apart

    def versions(self) -> Mapping[str, int] | None:
        """Every layer table's version as last announced, or None while not listening (ask the database).

        With a ``board``, the larger of what this process heard and what another process of this machine
        posted after its own write.
        """
        if not self.connected.is_set():
            return None
        own = self._versions
        if self.board is None:
            return own
        posted = self.board.read()
        merged_from, merged = self._merged
        if merged_from[0] is not own or merged_from[1] is not posted:
            merged = highest(own, posted)
            self._merged = ((own, posted), merged)
        return merged

    def reload_versions(self, engine: Any) -> None:
        """Read the versions now, and post them on the board.

        After this process wrote: its client's next read, on this process or another, must not wait for the NOTIFY.
        """
        import sqlalchemy as sa

        with engine.connect() as conn:
            found = conn.execute(sa.text(
                "SELECT table_name, version, pg_current_wal_lsn()::text FROM layer_versions")).all()
        rows = {str(t): int(v) for t, v, _ in found}
        wal = max((lsn(w) for _, _, w in found), default=0)
        with self._lock:
            self._versions = highest(self._versions, rows)
            self._wal = max(self._wal, wal)
        if self.board is not None:
            self.board.post(rows, wal)

    def wal_floor(self) -> int:
        """What a replica must have replayed to be read from (``replicas``).

        The primary's WAL position when this process last heard of a change, or any process of this machine
        last wrote.
        """
        return max(self._wal, self.board.wal() if self.board is not None else 0)

    def _version(self, payload: str) -> None:
        table, _, number = payload.rpartition(" ")
        if table and number.isdigit():
            with self._lock:  # a new dict, so readers never see one half-updated; a NOTIFY heard after a
                # reload that already read a later version does not take it back (versions only grow)
                if int(number) > self._versions.get(table, -1):
                    self._versions = {**self._versions, table: int(number)}

    def start(self) -> None:
        """Start listening (returns at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        self._thread.join(timeout=5)

    def event_id(self, seq: int) -> str:
        """The SSE id of a change: this process's epoch and the change's number (``3f9a0c1e.57``)."""
        return f"{self.epoch}.{seq}"

    def here(self) -> str:
        """The id of the last change heard: a page made now subscribes from it (``/events?since=``)."""
        with self._lock:
            return self.event_id(self._seq)

    def subscribe(self, loop: asyncio.AbstractEventLoop, last_event_id: str | None = None) -> Subscription:
        """A queue of future changes, the kept changes after a ``Last-Event-ID``, and whether some were lost.

        Lost: the id is from another process (the server restarted) or older than the changes kept.
        """
        subscriber = _Subscriber(loop)
        epoch, _, number = (last_event_id or "").partition(".")
        with self._lock:
            self._subscribers.append(subscriber)
            position = self._seq
            if not last_event_id:
                return Subscription(subscriber, [], False, position)
            if epoch != self.epoch or not number.isdigit():
                return Subscription(subscriber, [], True, position)
            after = int(number)
            missed = [c for c in self._recent if c.seq > after]
            lost = after > position or (bool(self._recent) and self._recent[0].seq > after + 1)
        return Subscription(subscriber, [] if lost else missed, lost, position)

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        """Forget a subscriber."""
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def _publish(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        with self._lock:
            self._seq += 1
            change = Change(self._seq, str(data.get("layer")), str(data.get("op")), data.get("id"),
                            data.get("feature"))
            self._recent.append(change)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.loop.call_soon_threadsafe(_offer, sub.queue, change)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(self.url)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}; LISTEN {VERSIONS}")
                    # after LISTEN, so no bump falls between reading the versions and hearing of the next
                    cur.execute("SELECT to_regclass('layer_versions') IS NOT NULL")
                    found = cur.fetchone()
                    rows = []
                    if found and found[0]:
                        cur.execute("SELECT table_name, version FROM layer_versions")
                        rows = cur.fetchall()
                    wal = _current_wal(cur)
                with self._lock:
                    self._versions = {str(t): int(v) for t, v in rows}
                    self._wal = max(self._wal, wal)
                self.connections += 1
                if self.connections > 1:
                    # changes made while we were away were not heard: clients must reload
                    self._publish(json.dumps({"layer": "*", "op": "reload"}))
                self.connected.set()
                delay = 0.5
                last_check = time.monotonic()
                while not self._stop.is_set():
                    # notifications that came in while a query of ours ran (the WAL position below, the check)
                    # were read off the socket with its answer: they wait in conn.notifies, and select would not
                    # wake for them until the next one came
                    if conn.notifies or select.select([conn], [], [], 0.2)[0]:
                        conn.poll()
                        heard = bool(conn.notifies)
                        while conn.notifies:
                            note = conn.notifies.pop(0)
                            if note.channel == VERSIONS:
                                self._version(note.payload)
                            else:
                                self._publish(note.payload)
                        if heard:  # after the versions, which must not wait a round trip for it (replicas.py
                            # keys a replica's tile by the versions it read itself, so a floor a moment late is safe)
                            with conn.cursor() as cur:  # at least the commit LSN of every change heard so far
                                wal = _current_wal(cur)
                            with self._lock:
                                self._wal = max(self._wal, wal)
                    elif conn.closed:
                        raise psycopg2.OperationalError("connection closed")
                    elif time.monotonic() - last_check > 2:
                        with conn.cursor() as cur:  # notices a dead server while nothing happens
                            cur.execute("SELECT 1")
                        last_check = time.monotonic()
                conn.close()
            except (psycopg2.Error, OSError) as err:
                self.connected.clear()
                log.warning("change listener lost the database (%s); listening again in %.1f s", err, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)


def _current_wal(cur: Any) -> int:
    """The server's WAL position (what it has replayed, on a standby)."""
    cur.execute(POSITION_SQL)
    found = cur.fetchone()
    return lsn(found[0] if found else None)


def _offer(queue: asyncio.Queue[Change], change: Change) -> None:
    """A change for one client; a client that fell a whole queue behind is told to reload instead.

    Its queue then holds one change, not a thousand: a client that does not read holds little memory.
    """
    if queue.full():
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(Change(change.seq, "*", "reload"))
        return
    queue.put_nowait(change)


def wait_connected(listener: ChangeListener, seconds: float = 10) -> bool:
    """Whether the listener is listening within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if listener.connected.wait(0.1):
            return True
    return False
