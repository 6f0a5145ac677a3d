"""The Flywheel API: candidates, the fleet's assignments, health."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from services.api.deps import SessionDep
from services.api.routes import candidates, robots


def create_app() -> FastAPI:
    app = FastAPI(title="Flywheel", version="0.1.0")
    app.include_router(candidates.router)
    app.include_router(robots.router)

    @app.get("/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok"}

    return app
