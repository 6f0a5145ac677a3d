"""Rollouts for fleet managers: stages, robots, the watched metrics; halt and roll back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from services.api.deps import CurrentUser, SessionDep, SettingsDep
from services.api.schemas import Reason
from services.approval.users import require_role
from services.readmodel.rollouts import rollouts_overview
from services.rollout import controller

router = APIRouter(
    prefix="/rollouts",
    tags=["rollouts"],
    responses={
        400: {"description": "Malformed JSON body."},
        401: {"description": "Missing or invalid token."},
    },
)


class Stage(BaseModel):
    name: str
    share: float
    robots: list[str]
    outcome: str | None
    episodes: int
    llr: dict[str, float]
    windows: list[dict[str, Any]]


class RolloutOut(BaseModel):
    id: int
    candidate_id: str
    from_version: str | None
    to_version: str
    state: str
    current_stage: str | None
    reason: str | None
    started_at: datetime
    finished_at: datetime | None
    stages: list[Stage]


class RobotOut(BaseModel):
    robot_id: str
    group: str
    model_version: str | None
    last_seen: datetime | None


class Overview(BaseModel):
    champion: str | None
    rollouts: list[RolloutOut]
    robots: list[RobotOut]


@router.get("", response_model=Overview)
def overview(session: SessionDep, user: CurrentUser) -> dict:
    return rollouts_overview(session)


@router.post(
    "/halt",
    response_model=RolloutOut,
    responses={
        403: {"description": "Only a fleet manager may halt."},
        409: {"description": "No rollout is in progress."},
    },
)
def halt(body: Reason, settings: SettingsDep, session: SessionDep, user: CurrentUser) -> dict:
    """Halt the rollout in progress and return its robots to the champion."""
    require_role(user, "fleet-manager", action="halt a rollout")
    rollout = controller.halt_rollout(settings, actor=user.name, reason=body.reason)
    session.commit()  # end the read snapshot taken before the halt
    [out] = [r for r in rollouts_overview(session)["rollouts"] if r["id"] == rollout.id]
    return out
