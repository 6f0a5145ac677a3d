"""The audit log: who did what, when, why, with the state before and after."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import CurrentUser, SessionDep
from services.api.schemas import AuditEntry
from services.readmodel import review

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntry], responses={401: {"description": "No token."}})
def audit_log(
    session: SessionDep,
    user: CurrentUser,
    subject_id: Annotated[str | None, Query(max_length=80, pattern=r"^[A-Za-z0-9._:@-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    return review.audit_log(session, subject_id=subject_id, limit=limit)
