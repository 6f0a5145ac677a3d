"""Shadow runs and the field gate: a candidate's shadow report, starting and stopping a
shadow run, and the thresholds a fleet manager sets for judging on field evidence."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.api.deps import CandidateRef, CurrentUser, SessionDep, SettingsDep, WriteSessionDep
from services.api.schemas import Text
from services.approval.decisions import find_candidate
from services.errors import NotFound
from services.shadow import manage
from services.shadow.judging import candidate_shadow
from services.shadow.runs import running_shadow

router = APIRouter(
    tags=["shadow"],
    responses={
        400: {"description": "Malformed JSON body."},
        401: {"description": "Missing or invalid token."},
    },
)
_MANAGER = {403: {"description": "Only a fleet manager may do this."}}


class ThresholdsIn(BaseModel):
    min_episodes: int = Field(default=20, ge=2, le=100_000)
    max_distance_difference: float = Field(default=0.0, ge=-10, le=10)
    min_agreement: float = Field(default=0.5, ge=0, le=1)
    min_successes: int = Field(default=5, ge=2, le=100_000)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    reason: Text = Field(description="Why: kept in the audit log.")


class ShadowIn(BaseModel):
    candidate: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    reason: Text


class StopIn(BaseModel):
    reason: Text


@router.get("/candidates/{ref}/shadow", responses={404: {"description": "Never shadowed."}})
def get_candidate_shadow(
    ref: CandidateRef, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict[str, Any]:
    """The candidate's shadow report: per task, with bootstrap intervals over episodes."""
    candidate = find_candidate(session, ref)
    report = candidate_shadow(settings, candidate.id)
    if report is None:
        raise NotFound(f"candidate {ref} has never run as a shadow")
    return report


@router.get("/shadow")
def get_running_shadow(session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The shadow run under way, if any."""
    run = running_shadow(session=session)
    return {"running": None if run is None else manage.run_out(run)}


@router.post(
    "/shadow",
    status_code=201,
    responses=_MANAGER
    | {
        404: {"description": "No such candidate."},
        409: {"description": "The candidate has no registered model to run."},
    },
)
def post_shadow(body: ShadowIn, session: WriteSessionDep, user: CurrentUser) -> dict[str, Any]:
    """Run a candidate as the fleet's shadow (ending the one running, if another)."""
    return manage.start_as(session=session, user=user, ref=body.candidate, reason=body.reason)


@router.post("/shadow/stop", responses=_MANAGER | {404: {"description": "None running."}})
def stop_shadow(body: StopIn, session: WriteSessionDep, user: CurrentUser) -> dict[str, Any]:
    return manage.stop_as(session=session, user=user, reason=body.reason)


@router.get("/field-gate/thresholds")
def get_thresholds(session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The thresholds in force (the newest version) and every earlier version."""
    return manage.thresholds_overview(session=session)


@router.put("/field-gate/thresholds", responses=_MANAGER)
def put_thresholds(body: ThresholdsIn, session: WriteSessionDep, user: CurrentUser):
    """A new version of the thresholds; nights that begin from now on use it."""
    values = body.model_dump(exclude={"reason"})
    return manage.set_thresholds_as(session=session, user=user, values=values, reason=body.reason)
