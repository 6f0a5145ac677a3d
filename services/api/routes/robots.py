"""The robot-facing API: a robot asks what to run and reports how it is doing.

Robots are provisioned by an admin (``flywheel`` registers the simulated ones); they are
identified by id. Robot credentials (per-robot tokens or mTLS at the ingress) are left to
the deployment; the review API's user tokens are for people.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from services.api.deps import SettingsDep, WriteSessionDep
from services.api.limits import ROBOT_LIMIT_RESPONSES
from services.serving.robots import record_heartbeat, robot_assignment

router = APIRouter(prefix="/robots", tags=["robots"])

RobotId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
_ANSWERS = {404: {"description": "No such robot."}} | ROBOT_LIMIT_RESPONSES


class AssignmentPublic(BaseModel):
    robot_id: str
    model_version: str | None
    model_uri: str | None = Field(description="Where to download the model (MLflow URI).")
    checksum: str | None = Field(description="sha256 over the checkpoint's files.")


class HeartbeatIn(BaseModel):
    """What happened since the previous heartbeat. Episodes are counted by how they ended
    (success, or anything else), so the counts cannot contradict each other."""

    policy_version: str | None = Field(max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    successes: int = Field(ge=0, le=100_000, description="Episodes that ended in success.")
    failures: int = Field(ge=0, le=100_000, description="Episodes that did not.")
    interventions: int = Field(ge=0, le=1_000_000)
    active_seconds: float = Field(ge=0, le=7 * 24 * 3600, description="Time worked.")


@router.get("/{robot_id}/assignment", response_model=AssignmentPublic, responses=_ANSWERS)
def get_assignment(robot_id: RobotId, session: WriteSessionDep, settings: SettingsDep):
    return robot_assignment(session=session, settings=settings, robot_id=robot_id)


@router.post(
    "/{robot_id}/heartbeats",
    response_model=AssignmentPublic,
    status_code=201,
    responses=_ANSWERS | {400: {"description": "Malformed JSON body."}},
)
def post_heartbeat(
    robot_id: RobotId, body: HeartbeatIn, session: WriteSessionDep, settings: SettingsDep
):
    """Report since the previous heartbeat; the answer is the robot's current assignment."""
    record_heartbeat(
        session=session,
        robot_id=robot_id,
        policy_version=body.policy_version,
        episodes=body.successes + body.failures,
        failures=body.failures,
        interventions=body.interventions,
        active_seconds=body.active_seconds,
    )
    session.flush()
    return robot_assignment(session=session, settings=settings, robot_id=robot_id)
