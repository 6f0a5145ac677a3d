"""The policy server's web app: openpi's websocket protocol, the same over HTTP, and /health.

- ``ws://HOST:PORT/`` (or ``/robots/<robot_id>``): openpi's protocol. The server sends its
  metadata (a map) on connect; then each binary msgpack frame is an observation, answered by
  a binary frame ``{"actions": ...}``. A refused observation is answered by a text frame
  saying why (``openpi-client`` raises it as an error) and the connection stays open.
- ``POST /infer`` (or ``/robots/<robot_id>/infer``): one observation, as msgpack
  (``Content-Type: application/msgpack``) or JSON; the answer comes in the same encoding, or
  422 with the reason.
- ``GET /health``: 200 once the models it must serve are loaded, else 503.

Robots send their own credential, ``Authorization: Api-Key fwr_...`` (what ``openpi-client``
sends) or ``Bearer fwr_...``. With ``/robots/<robot_id>`` in the path the credential must be
that robot's (403 otherwise); without, it names the robot. Bad credentials count towards the
API's lockout (429 with Retry-After). A robot whose credential is revoked or rotated is
disconnected at the next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from services.api.lockout import LockedOut, Lockout, lockout_keys, lockout_of
from services.config import Settings
from services.policy_server import codec
from services.policy_server.protocol import NotServed, ObservationError, answer
from services.policy_server.routing import RobotRecord, Router
from services.serving.credentials import (
    RobotForbidden,
    RobotUnauthenticated,
    authenticate_robot,
    robot_with_credential,
)
from services.store import session_scope

log = logging.getLogger(__name__)
MSGPACK = "application/msgpack"
# Close code for a connection whose credential stopped working (RFC 6455: policy violation).
CREDENTIAL_WITHDRAWN = 1008


def create_policy_app(settings: Settings, router: Router | None = None) -> FastAPI:
    ps = settings.policy_server
    router = router or Router(settings)
    executor = ThreadPoolExecutor(ps.policy_server_threads, thread_name_prefix="inference")
    # Open connections and the credential hash each was opened with.
    connections: dict[WebSocket, RobotRecord] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = asyncio.create_task(_watch(router, connections, ps.policy_server_poll_s))
        try:
            yield
        finally:
            watcher.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(router.close)

    app = FastAPI(title="Flywheel policy server", lifespan=lifespan)
    app.state.lockout = Lockout.from_settings(settings.api)
    app.state.router = router

    async def serve(robot_id: str, data: bytes) -> tuple[bytes | None, str | None]:
        """The reply to one message: (msgpack bytes, None) or (None, why it was refused)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, _reply, router, robot_id, data), None
        except (codec.DecodeError, ObservationError) as exc:
            return None, f"observation refused: {exc}"
        except NotServed:
            return None, router.why_not_served(robot_id)
        except Exception as exc:  # a fault of the server's, not the robot's: it may retry
            log.exception("inference for robot %s failed", robot_id)
            return None, f"internal error in the policy server: {type(exc).__name__}: {exc}"

    @app.get("/health")
    def health():
        body = {"ready": router.ready, "versions": router.versions(), "failed": router.failed}
        body["shadow"] = router.shadow_counts()
        return JSONResponse(body, status_code=200 if router.ready else 503)

    @app.websocket("/")
    @app.websocket("/robots/{robot_id}")
    async def policy_socket(websocket: WebSocket, robot_id: str | None = None):
        try:
            robot = await _authenticate(settings, router, websocket, robot_id)
        except _Refused as refused:
            return await websocket.send_denial_response(refused.response())
        await websocket.accept()
        connections[websocket] = robot
        try:
            if router.route(robot.id) is None:  # enrolled since the last read, perhaps
                await asyncio.to_thread(router.refresh)
            route = router.route(robot.id)
            metadata = {"robot_id": robot.id, "policy_version": None}
            if route is not None:
                metadata = {"robot_id": robot.id, **route.executed.metadata()}
            await websocket.send_bytes(codec.packb(metadata))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    await websocket.send_text("send observations as binary msgpack frames")
                    continue
                reply, refusal = await serve(robot.id, data)
                if reply is None:
                    await websocket.send_text(refusal)
                else:
                    await websocket.send_bytes(reply)
        except WebSocketDisconnect:
            pass
        finally:
            connections.pop(websocket, None)

    @app.post("/infer")
    @app.post("/robots/{robot_id}/infer")
    async def infer_http(request: Request, robot_id: str | None = None):
        try:
            robot = await _authenticate(settings, router, request, robot_id)
        except _Refused as refused:
            return refused.response()
        as_json = request.headers.get("content-type", "").split(";")[0].strip() != MSGPACK
        limit = ps.policy_server_max_message_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # refused before it is read
            return JSONResponse({"detail": f"body larger than {limit} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > limit:
            return JSONResponse({"detail": f"body larger than {limit} bytes"}, status_code=413)
        try:
            data = codec.packb(_from_json(body)) if as_json else body
        except ValueError as exc:
            return JSONResponse({"detail": f"observation refused: {exc}"}, status_code=422)
        reply, refusal = await serve(robot.id, data)
        if reply is None:
            status = 422 if refusal.startswith("observation refused") else 503
            status = 500 if refusal.startswith("internal error") else status
            return JSONResponse({"detail": refusal}, status_code=status)
        if as_json:
            return JSONResponse(_to_json(codec.unpackb(reply)))
        return Response(reply, media_type=MSGPACK)

    return app


def _reply(router: Router, robot_id: str, data: bytes) -> bytes:
    """Decode, check, infer, encode: all in one inference thread (one hop from the loop)."""
    return codec.packb(answer(router.route(robot_id), codec.unpackb(data)))


class _Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}

    def response(self) -> Response:
        return JSONResponse({"detail": self.detail}, self.status, headers=self.headers)


def credential_of(authorization: str | None) -> str | None:
    """The credential in ``Api-Key <key>`` (openpi-client's form) or ``Bearer <key>``."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() not in ("api-key", "bearer"):
        return None
    return key.strip() or None


async def _authenticate(
    settings: Settings, router: Router, conn: HTTPConnection, robot_id: str | None
) -> RobotRecord:
    credential = credential_of(conn.headers.get("authorization"))
    lockout = lockout_of(conn)
    keys = lockout_keys(conn, robot=robot_id)
    try:
        lockout.check(keys)  # a locked-out client's credential is not even looked at
    except LockedOut as exc:
        raise _Refused(429, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc
    try:
        robot = await run_in_threadpool(_robot, settings, credential, robot_id)
    except (RobotUnauthenticated, RobotForbidden) as exc:
        if credential is not None:  # a request with no credential guessed nothing
            lockout.record_failure(keys)
        if isinstance(exc, RobotForbidden):
            raise _Refused(403, str(exc)) from exc
        detail = f"{exc} (send 'Authorization: Api-Key fwr_...' or 'Bearer fwr_...')"
        raise _Refused(401, detail, {"WWW-Authenticate": "Bearer"}) from exc
    lockout.record_success(keys)
    if router.group is not None and robot.group != router.group:
        raise _Refused(
            403,
            f"robot {robot.id!r} is in group {robot.group!r}; this server "
            f"serves group {router.group!r}",
        )
    return robot


def _robot(settings: Settings, credential: str | None, robot_id: str | None) -> RobotRecord:
    with session_scope(settings.db_url) as session:
        if robot_id is None:
            robot = robot_with_credential(session=session, credential=credential)
        else:
            robot = authenticate_robot(session=session, robot_id=robot_id, credential=credential)
        return RobotRecord(robot.id, robot.group, robot.policy_version, robot.credential_hash)


async def _watch(router: Router, connections: dict[WebSocket, RobotRecord], poll_s: float):
    """Refresh the routes every poll_s; close connections whose credential stopped working."""
    while True:
        try:
            report = await asyncio.to_thread(router.refresh)
            if report.loaded or report.swapped:
                log.info("loaded %s; robots switched: %s", report.loaded, report.swapped)
        except Exception:  # the store unreachable for a moment: keep serving what is loaded
            log.exception("refreshing the fleet's assignments failed")
        for websocket, robot in list(connections.items()):
            now = router.robots.get(robot.id)
            if now is None or now.credential_hash != robot.credential_hash:
                connections.pop(websocket, None)
                with contextlib.suppress(Exception):
                    await websocket.close(CREDENTIAL_WITHDRAWN, "robot credential withdrawn")
        await asyncio.sleep(poll_s)


def _from_json(body: bytes) -> dict:
    try:
        observation = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is neither msgpack (Content-Type {MSGPACK}) nor JSON") from exc
    if not isinstance(observation, dict):
        raise ValueError("an observation is a JSON object")
    return observation


def _to_json(reply: dict) -> dict:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in reply.items()}
