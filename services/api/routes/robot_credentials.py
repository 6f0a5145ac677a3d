"""Enrolling robots and managing their credentials: admins only, with a user's API token.

A credential is shown once, in the answer that issues it; only its hash is stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from services.api.deps import CurrentUser, SettingsDep, WriteSessionDep
from services.approval.users import require_role
from services.serving import credentials

router = APIRouter(
    prefix="/robots",
    tags=["robot credentials"],
    responses={
        400: {"description": "Malformed JSON body."},
        401: {"description": "Missing or invalid token."},
        403: {"description": "Admins only."},
    },
)

_ID_PATTERN = r"^[A-Za-z0-9._-]+$"
RobotId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN)]
_NOT_FOUND = {404: {"description": "No such robot."}}


class RobotEnroll(BaseModel):
    robot_id: str = Field(min_length=1, max_length=64, pattern=_ID_PATTERN)
    tasks: list[Annotated[str, Field(min_length=1, max_length=64, pattern=_ID_PATTERN)]] | None = (
        Field(default=None, max_length=32, description="Default: the tasks the policy serves.")
    )
    group: str = Field(default="default", min_length=1, max_length=64, pattern=_ID_PATTERN)


class RobotCredential(BaseModel):
    robot_id: str
    credential: str = Field(description="Shown once; only its hash is stored.")


@router.post(
    "",
    response_model=RobotCredential,
    status_code=201,
    responses={409: {"description": "The robot is enrolled already: rotate its credential."}},
)
def enroll(
    body: RobotEnroll, session: WriteSessionDep, settings: SettingsDep, user: CurrentUser
) -> RobotCredential:
    """Enroll a robot (it starts on the champion) and issue its credential."""
    require_role(user, "admin", action="enroll robots")
    credential = credentials.enroll_robot(
        session=session,
        robot_id=body.robot_id,
        tasks=body.tasks or list(settings.fleet.tasks),
        group=body.group,
        actor=user.name,
    )
    return RobotCredential(robot_id=body.robot_id, credential=credential)


@router.post("/{robot_id}/credential", response_model=RobotCredential, responses=_NOT_FOUND)
def rotate(robot_id: RobotId, session: WriteSessionDep, user: CurrentUser) -> RobotCredential:
    """Issue a new credential; the robot's old one stops working now."""
    require_role(user, "admin", action="rotate robot credentials")
    credential = credentials.rotate_credential(session=session, robot_id=robot_id, actor=user.name)
    return RobotCredential(robot_id=robot_id, credential=credential)


@router.delete("/{robot_id}/credential", status_code=204, responses=_NOT_FOUND)
def revoke(robot_id: RobotId, session: WriteSessionDep, user: CurrentUser) -> Response:
    """Revoke the robot's credential: it is refused until enrolled again."""
    require_role(user, "admin", action="revoke robot credentials")
    credentials.revoke_credential(session=session, robot_id=robot_id, actor=user.name)
    return Response(status_code=204)
