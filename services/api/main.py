"""The Flywheel API: candidates, decisions, the audit log, users, robots' credentials, the
fleet's assignments and heartbeats."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

from services.api import metrics, pages
from services.api.deps import SettingsDep
from services.api.errors import install_error_handlers
from services.api.routes import audit, candidates, robot_credentials, robots, rollouts, users
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
    install_error_handlers(app)
    for module in (candidates, rollouts, audit, users, robot_credentials, robots):
        app.include_router(module.router)
    pages.install(app)
    metrics.install(app)

    @app.get("/live", tags=["health"])
    def live() -> dict[str, str]:
        """Liveness: the process answers (depends on nothing else)."""
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
