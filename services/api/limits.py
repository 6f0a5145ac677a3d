"""What the API lets in: bodies up to a size, and robot requests as many as the store can take.

Both are plain ASGI middlewares (as errors.RefuseUnnamedQueryParameters), not Starlette's
BaseHTTPMiddleware, which would wrap every response. Their answers have the API's error
shape, ``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException
from fastapi.responses import JSONResponse

# Seconds a robot is told to wait when it is turned away: one heartbeat period is 2 s, so a
# retry after 1 s (plus the robot's jitter) is still in time for the next one.
RETRY_AFTER_S = 1


# What the robot routes document besides their own answers.
ROBOT_LIMIT_RESPONSES = {
    413: {"description": "The body is larger than FLYWHEEL_API_MAX_BODY_BYTES."},
    429: {"description": "Too many bad credentials from this client: retry after Retry-After."},
    503: {"description": "Too many robot requests at once: retry after Retry-After seconds."},
}


class BodyTooLarge(HTTPException):
    """A body that grew past the limit while it was being read (no Content-Length)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


class LimitBodySize:
    """Answers 413 to a body over ``max_bytes``: at once when Content-Length says so, and as
    soon as a chunked body grows past it (it is counted as it streams, never read whole).

    FastAPI reads the body before it opens a session for the endpoint, so a refused body
    records nothing. An overflow while FastAPI reads surfaces as the HTTPException it is;
    one that reaches this middleware is answered here, if nothing was sent yet.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(self.max_bytes)(scope, receive, send)
            return

        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(self.max_bytes)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content={"detail": f"request body larger than {limit} bytes"},
        headers={"Connection": "close"},
    )


class AdmitRobots:
    """Serves at most ``concurrency`` robot requests at once; the next wait up to
    ``queue_s`` for a turn, and are then answered 503 with Retry-After rather than left
    waiting for a database connection.

    Why: FastAPI runs the robot routes in a pool of 40 threads, each holding one of
    SQLAlchemy's 15 connections; on SQLite every one of them also waits for the one write
    lock. Fifty robots at once emptied the pool and every request waited its 30 s out.
    Admitted here, before any thread or connection is taken, a robot request either runs at
    once or is told when to come back, and /health and the review API keep their threads.
    """

    def __init__(self, app, *, concurrency: int, queue_s: float, prefix: str = "/robots/"):
        self.app = app
        self.prefix = prefix
        self.queue_s = queue_s
        self._turns = asyncio.Semaphore(concurrency)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if not await self._enter():
            busy = JSONResponse(
                status_code=503,
                content={"detail": f"the server is busy: retry after {RETRY_AFTER_S} s"},
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await busy(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._turns.release()

    async def _enter(self) -> bool:
        if not self._turns.locked():
            await self._turns.acquire()  # free: taken at once
            return True
        if self.queue_s == 0:
            return False
        try:
            await asyncio.wait_for(self._turns.acquire(), self.queue_s)
        except TimeoutError:
            return False
        return True
