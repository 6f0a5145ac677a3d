"""Rollouts for fleet managers: stages, robots, the watched metrics; start, halt, roll back,
and resume or advance a paused rollout."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.api.deps import CurrentUser, SessionDep, SettingsDep
from services.api.schemas import Reason
from services.approval.decisions import find_candidate
from services.approval.users import require_role
from services.readmodel.rollouts import rollouts_overview
from services.rollout import controller, manager

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
    spec: dict[str, Any] = Field(description="What the plan declared: tests, limits, gate.")
    counts: dict[str, Any] | None = Field(
        description="The last check of heartbeat counts against ingested episodes."
    )


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


class RolloutCreate(BaseModel):
    candidate: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Model version or candidate id of an approved candidate.",
    )


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
    "",
    response_model=RolloutOut,
    status_code=201,
    responses={
        403: {"description": "Only a fleet manager may start a rollout."},
        404: {"description": "No such candidate."},
        409: {"description": "Not approved, another rollout in progress, or a new champion."},
    },
)
def start(
    body: RolloutCreate, settings: SettingsDep, session: SessionDep, user: CurrentUser
) -> dict:
    """Roll an approved candidate out (idempotent: its rollout if it has one already)."""
    require_role(user, "fleet-manager", action="start a rollout")
    candidate_id = find_candidate(session, body.candidate).id
    session.commit()  # the controller writes in its own transaction
    rollout = controller.start_rollout(settings, candidate_id, actor=user.name)
    return _shown(session, rollout.id)


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
    return _shown(session, rollout.id)


@router.post(
    "/rollback",
    response_model=RolloutOut,
    responses={
        403: {"description": "Only a fleet manager may roll back."},
        409: {"description": "No completed rollout replaced an earlier champion."},
    },
)
def roll_back(body: Reason, settings: SettingsDep, session: SessionDep, user: CurrentUser) -> dict:
    """Return the fleet and the champion to the version before the last completed rollout."""
    require_role(user, "fleet-manager", action="roll back")
    rollout = controller.rollback(settings, actor=user.name, reason=body.reason)
    return _shown(session, rollout.id)


class Resume(Reason):
    episodes: int | None = Field(
        default=None, ge=1, description="More candidate episodes (default: the cap again)."
    )
    hours: float | None = Field(
        default=None, gt=0, description="More hours for the stage (default: its cap again)."
    )


_PAUSED = {
    403: {"description": "Only a fleet manager may resume or advance."},
    409: {"description": "No rollout is paused."},
}


@router.post("/resume", response_model=RolloutOut, responses=_PAUSED)
def resume(body: Resume, settings: SettingsDep, session: SessionDep, user: CurrentUser) -> dict:
    """Let the paused rollout's stage go on, its caps extended."""
    require_role(user, "fleet-manager", action="resume a rollout")
    rollout = manager.resume_rollout(
        settings, actor=user.name, reason=body.reason, episodes=body.episodes, hours=body.hours
    )
    return _shown(session, rollout.id)


@router.post("/advance", response_model=RolloutOut, responses=_PAUSED)
def advance(body: Reason, settings: SettingsDep, session: SessionDep, user: CurrentUser) -> dict:
    """Move the paused rollout to its next stage by hand (the last one promotes)."""
    require_role(user, "fleet-manager", action="advance a rollout")
    rollout = manager.advance_rollout(settings, actor=user.name, reason=body.reason)
    return _shown(session, rollout.id)


def _shown(session, rollout_id: int) -> dict:
    session.commit()  # end the read snapshot taken before the change
    [out] = [r for r in rollouts_overview(session)["rollouts"] if r["id"] == rollout_id]
    return out
