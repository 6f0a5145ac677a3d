"""The robot-facing API: a robot asks what to run and reports how it is doing.

Every endpoint here takes the robot's own credential (``Authorization: Bearer fwr_...``,
issued when an admin enrolls the robot: ``flywheel robots enroll`` or ``POST /robots``).
A missing, wrong or revoked credential gets 401 and another robot's gets 403, before the
request's path or body is looked at; nothing is recorded for a refused request. Heartbeats
are counted once per ``heartbeat_id`` and only when plausible (docs/security.md).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from services.api.deps import CurrentRobot, KnownQueryOnly, SettingsDep
from services.api.limits import ROBOT_LIMIT_RESPONSES
from services.rollout.guardrails import guard_heartbeat
from services.serving.heartbeats import HeartbeatReport, accept_heartbeat
from services.serving.robots import robot_assignment

router = APIRouter(prefix="/robots", tags=["robots"])

RobotId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
_REFUSED = {
    401: {"description": "Missing, wrong or revoked robot credential."},
    403: {"description": "The credential is another robot's."},
} | ROBOT_LIMIT_RESPONSES


class AssignmentPublic(BaseModel):
    robot_id: str
    model_version: str | None
    model_uri: str | None = Field(description="Where to download the model (MLflow URI).")
    checksum: str | None = Field(description="sha256 over the checkpoint's files.")


class HeartbeatIn(BaseModel):
    """What happened since the previous heartbeat. Episodes are counted by how they ended
    (success, or anything else), so the counts cannot contradict each other."""

    heartbeat_id: UUID = Field(
        description="Chosen by the robot, new for each report and the same when retrying one: "
        "a heartbeat is counted once per id."
    )
    policy_version: str | None = Field(
        max_length=32,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The version the episodes ran: the robot's assignment (or, shortly after "
        "a change, the one before).",
    )
    successes: int = Field(ge=0, le=100_000, description="Episodes that ended in success.")
    failures: int = Field(ge=0, le=100_000, description="Episodes that did not.")
    interventions: int = Field(ge=0, le=1_000_000)
    active_seconds: float = Field(ge=0, le=7 * 24 * 3600, description="Time worked.")
    safety_events: int = Field(
        default=0, ge=0, le=10_000, description="Safety events (collisions, limit trips)."
    )
    emergency_stop: bool = Field(default=False, description="An emergency stop was pressed.")


async def _heartbeat_body(request: Request, _caller: CurrentRobot) -> HeartbeatIn:
    """The body, read only once the credential has passed: a caller without one gets 401
    whatever it sent, and its body is never parsed."""
    try:
        return HeartbeatIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


_HEARTBEAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": HeartbeatIn.model_json_schema()}},
    }
}


@router.get("/{robot_id}/assignment", response_model=AssignmentPublic, responses=_REFUSED)
def get_assignment(
    robot_id: RobotId,
    caller: CurrentRobot,
    _query: Annotated[None, KnownQueryOnly],
    settings: SettingsDep,
):
    """What the robot should run: model version, download URI and checksum."""
    return robot_assignment(session=caller.session, settings=settings, robot_id=caller.robot.id)


@router.post(
    "/{robot_id}/heartbeats",
    response_model=AssignmentPublic,
    status_code=201,
    openapi_extra=_HEARTBEAT_BODY,
    responses=_REFUSED
    | {
        409: {
            "description": "A report for a version the robot is not assigned, or a "
            "heartbeat_id reused with other counts."
        },
    },
)
def post_heartbeat(
    robot_id: RobotId,
    caller: CurrentRobot,
    _query: Annotated[None, KnownQueryOnly],
    body: Annotated[HeartbeatIn, Depends(_heartbeat_body)],
    settings: SettingsDep,
):
    """Report since the previous heartbeat; the answer is the robot's current assignment.

    A retry with the same ``heartbeat_id`` and counts gets the same answer and is not
    counted again; counts that cannot be true for the time reported get 422. A safety event
    or an emergency stop on a candidate halts its rollout before the answer.
    """
    session, robot = caller.session, caller.robot
    heartbeat = accept_heartbeat(
        session=session,
        settings=settings,
        robot=robot,
        heartbeat_id=str(body.heartbeat_id),
        report=HeartbeatReport(
            policy_version=body.policy_version,
            episodes=body.successes + body.failures,
            failures=body.failures,
            interventions=body.interventions,
            active_seconds=body.active_seconds,
            safety_events=body.safety_events,
            emergency_stop=body.emergency_stop,
        ),
    )
    if heartbeat is not None:  # a retry was guarded the first time
        guard_heartbeat(session=session, heartbeat=heartbeat)
    return robot_assignment(session=session, settings=settings, robot_id=robot.id)
