"""The robot-facing API: a robot asks which model version to run."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from services.api.deps import SessionDep
from services.rollout.assignments import assignment_of

router = APIRouter(prefix="/robots", tags=["robots"])


class AssignmentPublic(BaseModel):
    robot_id: str
    model_version: str | None


@router.get(
    "/{robot_id}/assignment",
    response_model=AssignmentPublic,
    responses={404: {"description": "No such robot."}},
)
def get_assignment(robot_id: str, session: SessionDep) -> AssignmentPublic:
    try:
        version = assignment_of(session=session, robot_id=robot_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return AssignmentPublic(robot_id=robot_id, model_version=version)
