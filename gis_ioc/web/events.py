"""``/events``: changes of incidents, cameras and infrastructure as server-sent events, for the wall."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from gis_ioc import features, limits
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.events import Change, ChangeListener

router = APIRouter(tags=["Live"])
LIVE_LAYERS = ("incidents", "cameras", "infrastructure")
RELOAD = json.dumps({"layer": "*", "id": None, "op": "reload", "feature": None})  # a client reads everything again


def _feature(engine: Any, catalog: Catalog, change: Change) -> Any:
    if change.feature is not None or change.op not in ("insert", "update") or change.id is None:
        return change.feature
    with engine.connect() as conn:
        found = features.item(conn, catalog.get(change.layer, conn), change.id)
    return json.loads(found) if found else None


def slim(feature: Any) -> Any:
    """A feature as an event carries it: each text property cut to ``limits.EVENT_TEXT_CHARS`` (a popup's worth)."""
    if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
        return feature
    cut = limits.EVENT_TEXT_CHARS
    properties = {k: (f"{v[:cut]}…" if isinstance(v, str) and len(v) > cut else v)
                  for k, v in feature["properties"].items()}
    return {**feature, "properties": properties}


def event_data(engine: Any, catalog: Catalog, change: Change) -> str:
    """The data of one change event, the same text for every client."""
    feature = slim(_feature(engine, catalog, change))
    return json.dumps({"layer": change.layer, "id": change.id, "op": change.op, "feature": feature}, default=str)


class EventTexts:
    """Each change's event made once per process and shared by its clients (the latest few kept).

    Fifty walls watching one change read its row once, not fifty times.
    """

    KEEP = 64

    def __init__(self) -> None:
        self._made: OrderedDict[int, asyncio.Future[str]] = OrderedDict()

    async def of(self, engine: Any, catalog: Catalog, change: Change) -> str:
        """The event's data, made by the first client that asks for it."""
        made = self._made.get(change.seq)
        if made is None:
            made = asyncio.ensure_future(run_in_threadpool(event_data, engine, catalog, change))
            self._made[change.seq] = made
            while len(self._made) > self.KEEP:
                self._made.popitem(last=False)
        return await asyncio.shield(made)


@router.get("/events", summary="Live changes (server-sent events)", operation_id="getEvents",
            responses={200: {"content": {"text/event-stream": {}}, "description": "A stream of changes"}})
async def events(
    request: Request,
    layers: Annotated[str | None, Query(max_length=100, description="incidents, cameras, infrastructure, "
                                        "comma-separated (default all)")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    since: Annotated[str | None, Query(max_length=100, description="The id of the last change a page was made "
                                       "with (it says so): the changes after it come first, as for a reconnect "
                                       "with Last-Event-ID. From another process (several workers) or a restart: "
                                       "ignored")] = None,
) -> EventSourceResponse:
    """Changes of incidents, cameras and infrastructure as server-sent events.

    Each insert, update and delete is an event ``change`` with the layer, id, operation and the new
    feature (for a delete, the feature as it was); a bulk load is one ``reload``. A browser that reconnects
    sends ``Last-Event-ID`` and gets what it missed (the last 500 changes are kept); when that cannot be
    replayed (the server restarted, or the client was away too long) the first event is a ``reload``. Else the
    first event is ``hello``, whose id is where the stream starts (with ``"resumed": true`` when it resumes from
    an id: a client that reconnects without one after a ``hello`` without ``resumed`` has missed what happened
    while it was away). A fresh stream's ``hello`` also has the layer versions heard so far: a page that read
    its data at older versions (served by another process) reads it again.
    """
    wanted = tuple(x.strip() for x in (layers or ",".join(LIVE_LAYERS)).split(",") if x.strip())
    unknown = [x for x in wanted if x not in LIVE_LAYERS]
    if unknown:
        raise InvalidInput(f"layers: {unknown[0]!r} has no live events (live: {', '.join(LIVE_LAYERS)})",
                           param="layers")
    listener: ChangeListener = request.app.state.listener
    if last_event_id is None and since is not None and since.partition(".")[0] == listener.epoch:
        last_event_id = since  # a page made by this process: what changed after it was made (not a reload loop
        # between workers: an id from another process is a plain start)
    subscription = listener.subscribe(asyncio.get_running_loop(), last_event_id)
    subscriber = subscription.subscriber
    engine, catalog = request.app.state.engine, request.app.state.catalog
    texts: EventTexts = request.app.state.event_texts

    async def stream() -> AsyncIterator[dict[str, Any]]:
        try:
            here = listener.event_id(subscription.position)
            if subscription.lost:  # changes this stream cannot replay (a restart, or too long away): reload
                yield {"id": here, "event": "change", "retry": 2000, "data": RELOAD}
            elif last_event_id is None:  # an id from the start, so a reconnect can say where it left off
                yield {"id": here, "event": "hello", "retry": 2000,
                       "data": json.dumps({"epoch": listener.epoch, "versions": dict(listener.versions() or {})})}
            else:  # resumed: the id it resumed from (a page's ?since= is not yet the browser's own Last-Event-ID,
                # and a restart must find one to be told to reload), then what it missed
                yield {"id": last_event_id, "event": "hello", "retry": 2000,
                       "data": json.dumps({"epoch": listener.epoch, "resumed": True})}
            backlog = list(subscription.missed)
            while True:
                change = backlog.pop(0) if backlog else await subscriber.queue.get()
                if change.layer not in wanted and change.layer != "*":
                    continue
                data = RELOAD if change.op == "reload" else await texts.of(engine, catalog, change)
                yield {"id": listener.event_id(change.seq), "event": "change", "data": data, "retry": 2000}
        finally:
            listener.unsubscribe(subscriber)

    return EventSourceResponse(stream(), ping=15)
