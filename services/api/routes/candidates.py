"""Candidates with their gate verdicts (read-only for now)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from services.api.deps import SessionDep
from services.store.models import Candidate, Decision

router = APIRouter(prefix="/candidates", tags=["candidates"])


class CandidatePublic(BaseModel):
    id: str
    model_version: str | None
    parent_version: str | None
    dataset_id: str
    status: str
    gate: str | None
    gate_reason: str | None
    created_at: datetime


@router.get("", response_model=list[CandidatePublic])
def list_candidates(session: SessionDep) -> list[CandidatePublic]:
    gates = {
        d.candidate_id: d for d in session.scalars(select(Decision).where(Decision.kind == "gate"))
    }
    return [
        CandidatePublic(
            id=c.id,
            model_version=c.model_version,
            parent_version=c.parent_version,
            dataset_id=c.dataset_id,
            status=c.status,
            gate=gates[c.id].verdict if c.id in gates else None,
            gate_reason=gates[c.id].reason if c.id in gates else None,
            created_at=c.created_at,
        )
        for c in session.scalars(select(Candidate).order_by(Candidate.created_at))
    ]
