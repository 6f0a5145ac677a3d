"""The Flywheel API: candidates, decisions, the audit log, users, robots' credentials, the
fleet's assignments and heartbeats."""

from __future__ import annotations

import gc

from fastapi import FastAPI, HTTPException
from sqlalchemy.orm import configure_mappers

from services.api import metrics, pages
from services.api.deps import KnownQueryOnly, SettingsDep
from services.api.errors import install_error_handlers
from services.api.limits import AdmitRobots, LimitBodySize
from services.api.lockout import Lockout
from services.api.routes import (
    audit,
    candidates,
    robot_credentials,
    robots,
    rollouts,
    shadow,
    users,
)
from services.config import get_settings
from services.runtime.dependencies import DependencyUnavailable, check_database


def create_app() -> FastAPI:
    app = FastAPI(
        title="Flywheel",
        version="0.1.0",
        description="Review candidates, approve rollouts, read the audit log, enroll robots. "
        "People's endpoints take a user's API token (`Authorization: Bearer fw_...`, from "
        "`flywheel users add`); the robot-facing ones (`/robots/{robot_id}/assignment`, "
        "`/robots/{robot_id}/heartbeats`) take that robot's own credential (`Authorization: "
        "Bearer fwr_...`, from `flywheel robots enroll`). /health and /live take none.",
    )
    settings = get_settings()
    app.state.lockout = Lockout.from_settings(settings.api)
    install_error_handlers(app)
    # Added last, so run first: a body is measured and a robot admitted before anything else.
    app.add_middleware(
        AdmitRobots,
        concurrency=settings.robot_concurrency,
        queue_s=settings.api.robot_queue_s,
    )
    app.add_middleware(LimitBodySize, max_bytes=settings.api.max_body_bytes)
    for module in (candidates, rollouts, audit, users, robot_credentials, shadow):
        app.include_router(module.router, dependencies=[KnownQueryOnly])
    # The robot routes check their query after the credential: without one, only 401.
    app.include_router(robots.router)
    pages.install(app)
    metrics.install(app)

    @app.get("/live", tags=["health"])
    async def live() -> dict[str, str]:
        """Liveness: the process answers (depends on nothing else)."""
        # async: answered on the event loop, not in a worker thread that load may hold.
        return {"status": "ok"}

    @app.get(
        "/health",
        tags=["health"],
        responses={503: {"description": "The database cannot be reached; the detail says why."}},
    )
    def health(settings: SettingsDep) -> dict[str, str]:
        """Readiness: the database answers."""
        try:
            check_database(settings)
        except DependencyUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        return {"status": "ok"}

    return app


def settle_heap() -> None:
    """Before a long-lived API process serves: what start-up built is set aside for good.

    Start-up (FastAPI, SQLAlchemy, torch for the checkpoints' checksums...) leaves some
    300,000 objects that the garbage collector walks on every full collection. Under 50
    heartbeats a second a full collection came every 6-12 s and stopped every request while
    it ran: 155 ms on the two-core development machine, 0.35-2.2 s while it was overloaded
    (timed with gc.callbacks in the served process). Frozen, they are never walked again;
    what requests create is collected as before.
    """
    configure_mappers()  # else built on the first request, after the freeze
    gc.collect()  # start-up's garbage goes now, not into the frozen generation
    gc.freeze()
