"""The Flywheel API: candidates, decisions, the audit log, users, the fleet's assignments."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

from services.api import metrics, pages
from services.api.deps import SettingsDep
from services.api.errors import install_error_handlers
from services.api.limits import AdmitRobots, LimitBodySize
from services.api.lockout import Lockout
from services.api.routes import audit, candidates, robots, rollouts, users
from services.config import get_settings
from services.runtime.dependencies import DependencyUnavailable, check_database


def create_app() -> FastAPI:
    app = FastAPI(
        title="Flywheel",
        version="0.1.0",
        description="Review candidates, approve rollouts, read the audit log. Every endpoint "
        "but /health, /live and /robots takes an API token: `Authorization: Bearer <token>`.",
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
    for module in (candidates, rollouts, audit, users, robots):
        app.include_router(module.router)
    pages.install(app)
    app.include_router(metrics.router)

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
