"""The Flywheel API: candidates, decisions, the audit log, users, the fleet's assignments."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from services.api import metrics, pages
from services.api.deps import SessionDep
from services.api.errors import install_error_handlers
from services.api.routes import audit, candidates, robots, rollouts, users


def create_app() -> FastAPI:
    app = FastAPI(
        title="Flywheel",
        version="0.1.0",
        description="Review candidates, approve rollouts, read the audit log. "
        "Every endpoint but /health takes an API token: `Authorization: Bearer <token>`.",
    )
    install_error_handlers(app)
    for module in (candidates, rollouts, audit, users, robots):
        app.include_router(module.router)
    pages.install(app)
    app.include_router(metrics.router)

    @app.get("/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok"}

    return app
