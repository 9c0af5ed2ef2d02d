"""The outer layer of every request (pure ASGI, around the routers).

It gives each request an id and a database budget (``db.BUDGET``: statement timeout, cancellation
when the client goes away), enforces the body limit as bytes arrive, refuses NUL characters in the
URL, answers HEAD and OPTIONS for every route with the full ``Allow``, adds the security headers, and
turns anything unexpected into one JSON error (logged with a traceback) instead of a broken connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gis_ioc import db
from gis_ioc.errors import (
    GisIocError,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    from_database,
    http_status,
)
from gis_ioc.settings import Settings

log = logging.getLogger("gis_ioc.web")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("gis_ioc_request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
RETRY_AFTER_S = "5"
WATCH_AFTER_S = 0.1  # a request still running after this long is watched for its client leaving


def error_body(err: GisIocError) -> dict[str, Any]:
    """The one error shape: ``code``, ``description``, the parameter when there is one, the request id."""
    body: dict[str, Any] = {"code": err.code, "description": err.message}
    if err.param:
        body["parameter"] = err.param
    body["request_id"] = REQUEST_ID.get()
    return body


def error_headers(status: int) -> dict[str, str]:
    """``Retry-After`` on a 503: the database, a timeout or a full queue is worth trying again."""
    return {"Retry-After": RETRY_AFTER_S} if status == 503 else {}


def content_security_policy(settings: Settings) -> str:
    """The CSP of the HTML views: only this server (the pages' own inline scripts and styles), plus the basemap."""
    images = "'self' data: blob:"
    if settings.basemap_url:
        parts = urlsplit(settings.basemap_url.replace("{", "").replace("}", ""))
        if parts.scheme and parts.netloc:
            images += f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'")


class _HeadDone(Exception):
    """A HEAD response is complete: the rest of the GET body is not produced."""


class Guard:
    """Request id, budget, limits, HEAD/OPTIONS, security headers and the last word on errors."""

    def __init__(self, app: ASGIApp, settings: Settings, openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.settings = settings
        self.openapi = openapi
        self.html_policy = content_security_policy(settings)
        self._methods: list[tuple[re.Pattern[str], set[str]]] | None = None

    def allowed(self, scope: Scope) -> list[str]:
        """Every method some route takes on this path (HEAD with GET, OPTIONS always); empty for no route."""
        if self._methods is None:
            self._methods = _method_table(self.openapi())
        path = scope.get("path", "")
        methods: set[str] = set()
        for pattern, verbs in self._methods:
            if pattern.match(path):
                methods |= verbs
        if not methods:
            return []
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request (websockets and lifespan pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else os.urandom(8).hex()  # 16 hex digits, as uuid4's
        id_token = REQUEST_ID.set(request_id)
        budget = db.Budget(self.settings.statement_timeout_ms)
        budget_token = db.BUDGET.set(budget)
        method = scope["method"]
        head = method == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        state = {"started": False, "head_sent": False}

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = request_id
                out["X-Content-Type-Options"] = "nosniff"
                out["X-Frame-Options"] = "DENY"
                out["Referrer-Policy"] = "same-origin"
                kind = out.get("content-type", "")
                out["Content-Security-Policy"] = (self.html_policy if kind.startswith("text/html")
                                                  else "default-src 'none'; frame-ancestors 'none'")
                if message["status"] == 405:
                    out["Allow"] = ", ".join(self.allowed(scope))
            elif message["type"] == "http.response.body" and head:
                if state["head_sent"]:
                    raise _HeadDone
                state["head_sent"] = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body"):
                    raise _HeadDone  # a stream (events): the headers were the answer
                return
            await send(message)

        async def fail(err: GisIocError) -> None:
            status = http_status(err)
            body = json.dumps(error_body(err)).encode()
            await send_guarded({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in error_headers(status).items())]})
            await send_guarded({"type": "http.response.body", "body": body})

        end_watch: Callable[[], None] | None = None
        try:
            problem = self.refuse(scope, headers)
            if problem is not None:
                await fail(problem)
                return
            if method == "OPTIONS":
                allowed = self.allowed(scope)
                if not allowed:
                    await fail(NotFound("path: no such resource", param="path"))
                    return
                await send_guarded({"type": "http.response.start", "status": 204, "headers": [
                    (b"allow", ", ".join(allowed).encode())]})
                await send_guarded({"type": "http.response.body", "body": b""})
                return
            if method in ("GET", "HEAD"):
                receive, end_watch = self.watch_disconnect(receive, budget)
            else:
                receive = self.limit_body(receive)
            await self.app(scope, receive, send_guarded)
        except _HeadDone:
            pass
        except ClientDisconnect:  # gone while its body arrived: nothing to answer, nothing to trace
            log.info("request %s %s %s: the client left before its body was complete", request_id, method,
                     scope.get("path"))
        except Exception as exc:  # the last word: never a traceback to the client, never a dropped connection
            if isinstance(exc, ExceptionGroup) and exc.split(_HeadDone)[1] is None:
                return  # a HEAD of a stream, ended inside the stream's task group
            known = exc if isinstance(exc, GisIocError) else from_database(exc)
            if known is None:
                log.exception("request %s %s %s failed", request_id, method, scope.get("path"))
                known = InternalError("the server failed to answer this request; it is logged under the "
                                      f"request id {request_id}")
            if not state["started"] and not budget.cancelled:
                await fail(known)
        finally:
            if end_watch is not None:
                end_watch()
            db.BUDGET.reset(budget_token)
            REQUEST_ID.reset(id_token)

    def refuse(self, scope: Scope, headers: dict[bytes, bytes]) -> GisIocError | None:
        """A NUL in the path or the query, or a declared body over the limit (before anything reads it)."""
        if "\x00" in scope.get("path", ""):
            return InvalidInput("path: contains a NUL character", param="path")
        query = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if "\x00" in name or "\x00" in value:
                    param = name.replace("\x00", "") or "query"
                    return InvalidInput(f"{param}: contains a NUL character", param=param)
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.settings.max_body_bytes:
            return PayloadTooLarge(f"body: {int(length):,} bytes is over the limit of "
                                   f"{self.settings.max_body_bytes:,} (GIS_IOC_MAX_BODY_BYTES)", param="body")
        return None

    def limit_body(self, receive: Receive) -> Receive:
        """The body counted as it arrives (chunked too): past the limit the read fails with a 413.

        A body that stops arriving for ``3 × GIS_IOC_HEADER_TIMEOUT_S`` (at least 30 s) fails with a 408.
        """
        limit = self.settings.max_body_bytes
        idle = max(30.0, 3 * self.settings.header_timeout_s)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), idle)
            except TimeoutError:
                raise RequestTimeout(f"body: nothing arrived for {idle:g} s", param="body") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"body: over the limit of {limit:,} bytes (GIS_IOC_MAX_BODY_BYTES)",
                                          param="body")
            return message

        return counted

    @staticmethod
    def watch_disconnect(receive: Receive, budget: db.Budget) -> tuple[Receive, Callable[[], None]]:
        """For a request without a body: notice the client leaving and cancel its queries at once.

        The watch starts after ``WATCH_AFTER_S`` (most requests are answered before: a tile costs no extra
        task), or at once when the app itself waits for the client (a stream). Returns the receive to give
        the app and the function that ends the watch.
        """
        gone = asyncio.Event()
        task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if budget.connections:
                        await asyncio.to_thread(budget.cancel)
                    else:
                        budget.cancelled = True
                    return

        def start() -> None:
            nonlocal task
            if task is None:
                task = loop.create_task(watch())

        timer = loop.call_later(WATCH_AFTER_S, start)
        delivered = False

        async def app_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            start()
            await gone.wait()
            return {"type": "http.disconnect"}

        def close() -> None:
            timer.cancel()
            if task is not None:
                task.cancel()

        return app_receive, close


# Pages served outside the API description (documentation, static files, the views' fallbacks): GET only.
_UNDESCRIBED = (r"^/docs(/.*)?$", r"^/redoc$", r"^/openapi\.json$", r"^/static/.+$", r"^/views(/.*)?$")


def _method_table(document: dict[str, Any]) -> list[tuple[re.Pattern[str], set[str]]]:
    """Path patterns and their methods, from the OpenAPI document (the routes as clients see them)."""
    table = [(re.compile(p), {"GET"}) for p in _UNDESCRIBED]
    for template, operations in document.get("paths", {}).items():
        regex, _, _ = compile_path(template)
        table.append((regex, {m.upper() for m in operations if m in ("get", "post", "put", "patch", "delete")}))
    return table
