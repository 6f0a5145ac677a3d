"""Domain exceptions as HTTP answers: a client error always gets a 4xx with a message."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.api.limits import RETRY_AFTER_S
from services.api.lockout import LockedOut
from services.approval.decisions import DecisionConflict
from services.approval.users import NoSuchUser, PermissionDenied, Unauthenticated, UserExists
from services.errors import NotFound
from services.registry.ledger import PromotionConflict
from services.rollout.controller import RolloutError
from services.serving.credentials import (
    RobotAlreadyEnrolled,
    RobotForbidden,
    RobotUnauthenticated,
)
from services.serving.heartbeats import HeartbeatConflict, ImplausibleHeartbeat
from services.shadow.runs import ShadowError

STATUS = {
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    NoSuchUser: 404,
    DecisionConflict: 409,
    UserExists: 409,
    RolloutError: 409,
    PromotionConflict: 409,  # the champion changed since the candidate was evaluated
    RobotUnauthenticated: 401,
    RobotForbidden: 403,
    RobotAlreadyEnrolled: 409,
    HeartbeatConflict: 409,
    ShadowError: 409,  # a candidate with no model to run
}
# Not LookupError or ValueError as such: a KeyError or a pydantic error inside a handler is a
# server bug and must show as a 500, not pass as the client's fault.


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, status in STATUS.items():
        app.add_exception_handler(exc_type, _handler(status))

    app.add_exception_handler(ImplausibleHeartbeat, _implausible)
    app.add_exception_handler(LockedOut, _locked_out)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
    app.add_middleware(RefuseUnnamedQueryParameters)


async def _locked_out(request: Request, exc: LockedOut) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers=headers)


async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
    # Every database connection stayed busy for the pool's timeout: the server is saturated,
    # not broken; the client is told when to come back.
    return JSONResponse(
        status_code=503,
        content={"detail": f"the server is busy: retry after {RETRY_AFTER_S} s"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _handler(status: int):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)

    return handle


async def _implausible(request: Request, exc: ImplausibleHeartbeat) -> JSONResponse:
    # 422 in FastAPI's validation-error shape (the one the OpenAPI schema documents), on the
    # field that cannot be true.
    detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "implausible"}]
    return JSONResponse(status_code=422, content={"detail": detail})


class RefuseUnnamedQueryParameters:
    """``?limit=1&=null`` is malformed: a value without a name would otherwise be ignored and
    the request answered as if it were well formed (found by the schema fuzzer). Answered with
    422 in FastAPI's validation-error shape, which the OpenAPI schema documents."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            if any(not name for name, _ in parse_qsl(query, keep_blank_values=True)):
                detail = [
                    {"loc": ["query", ""], "msg": "a query parameter has no name", "type": "name"}
                ]
                await JSONResponse(status_code=422, content={"detail": detail})(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)
