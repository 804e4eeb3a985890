"""Limits on a request: the size of its body, how many recalls run at once, the shutdown grace.

All three are ASGI middleware that answer with the service's problem body themselves
(``service.errors.problem_response``), because they act where FastAPI's handlers cannot:

- ``BodySizeLimit``: a body over ``max_bytes`` is ``413 body_too_large``. A declared
  ``Content-Length`` over the limit is refused without reading a byte; a chunked body (no
  ``Content-Length``) is read up to the limit and refused as soon as it passes it. The answer
  carries ``Connection: close``, so the client's remaining upload is not read.
- ``InFlightLimit``: while ``limit`` requests to the guarded routes are running in this process,
  another one is ``503 overloaded`` with ``Retry-After: 1`` at once (and counted), instead of
  waiting in an unbounded queue in front of the CPU pool. Other routes (probes, metrics) are
  never refused.
- ``ShutdownCutoff``: a request the server cancels because it was still running when the
  shutdown grace time (``NSP_SHUTDOWN_GRACE_S``) ended is answered ``503 shutting_down`` with
  ``Retry-After: 1`` (uvicorn's own answer would be a bare 500), unless it had started answering.

The limits keep their state on the one event loop of their process: no locks, and with several
worker processes every process has its own in-flight limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, Overloaded, ShuttingDown, problem_response

CLOSE = {"Connection": "close"}


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            # The server holds the body to its Content-Length (and rejects a malformed one), so
            # only the claim is checked here.
            if declared.isdigit() and int(declared) > self._max_bytes:
                await self._refuse(f"Content-Length {int(declared)}", scope, receive, send)
            else:
                await self._app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                await self._refuse(f"a chunked body of over {size - len(chunk)} bytes", scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self._app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, what: str, scope: Scope, receive: Receive, send: Send) -> None:
        exc = BodyTooLarge(f"{what} exceeds max_body_bytes={self._max_bytes}")
        await problem_response(exc, headers=CLOSE)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that returns ``body`` whole once, then what ``receive`` says (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class InFlightLimit:
    def __init__(
        self, app: ASGIApp, *, limit: int, paths: Collection[str], shed: Counter, in_flight: Gauge
    ) -> None:
        """``paths``: the guarded request paths; ``shed`` counts refusals and ``in_flight`` shows the
        running requests, both labelled by ``route``."""
        self._app = app
        self._limit = limit
        self._paths = frozenset(paths)
        self._shed = shed
        self._gauge = in_flight
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self._paths:
            await self._app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            self._shed.labels(route=scope["path"]).inc()
            exc = Overloaded(f"{self._limit} requests in flight (max_in_flight); retry shortly")
            await problem_response(exc)(scope, receive, send)
            return
        self._in_flight += 1
        gauge = self._gauge.labels(route=scope["path"])
        gauge.inc()
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_flight -= 1
            gauge.dec()


class ShutdownCutoff:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, tracked)
        except asyncio.CancelledError:
            # Only the server cancels a request task, and only when its shutdown grace time ends.
            if started:
                raise
            exc = ShuttingDown("the server is shutting down and its grace time ended; retry")
            await problem_response(exc, headers=CLOSE)(scope, receive, send)
