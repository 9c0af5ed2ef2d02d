"""GET routes with a fixed path answered without FastAPI's routing and dependency solving (pure ASGI).

A route by road takes 5–9 ms in the database; FastAPI's route matching, dependency solving and parameter
validation added about 1.5 ms to each (on two cores), as much as everything else around the SQL together. The
routes listed here (``Direct``: the path, its query model, its answer) are answered by this middleware
instead, inside the guard (request id, statement budget, disconnect watch, errors as JSON) and the gzip
middleware, with the same query model and the same answer function the routes use. So nothing is checked
or said twice:

- the query is validated by the route's own pydantic model (``Annotated[Model, Query()]`` on the route); a
  query it refuses goes on to the route, whose 400 names the parameter;
- a request with a key, or any request when reads need a key, goes on to the route (its dependencies check
  the key and set the keyed statement budget);
- the answer runs in a worker thread under the heavy-work limit, as the route's ``Heavy`` dependency does;
  an error it raises is answered by the guard as the route's error handlers answer it;
- a route may also have an answer on the event loop (``on_loop``: its statement on ``db_loop.LoopLane``,
  without the worker thread), tried first; when it cannot (the lane busy, the network to be made again) it
  returns None and the worker thread answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gis_ioc.web.deps import heavy_work, keyless_public_read


@dataclass(frozen=True)
class Direct:
    """A route answered directly: its query model, its answer (run in a worker thread), and one on the loop."""

    query: type[BaseModel]
    answer: Callable[[Request, Any], Response]
    on_loop: Callable[[Request, Any], Awaitable[Response | None]] | None = None


class DirectRoutes:
    """Answers GET requests for the paths in ``routes`` when they need no key and their query is valid."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Direct]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a listed route; pass every other request on."""
        found = self._direct(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        direct, query = found
        request = Request(scope, receive)
        async with heavy_work(request):
            response = None if direct.on_loop is None else await direct.on_loop(request, query)
            if response is None:
                response = await run_in_threadpool(direct.answer, request, query)
        await response(scope, receive, send)

    def _direct(self, scope: Scope) -> tuple[Direct, BaseModel] | None:
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        direct = self.routes.get(scope["path"])
        if direct is None or not keyless_public_read(scope):
            return None
        try:  # the last value of a repeated parameter, as the route takes it
            query = direct.query.model_validate(dict(QueryParams(scope["query_string"])))
        except ValidationError:
            return None  # the route names the parameter
        return direct, query
