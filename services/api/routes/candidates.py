"""Candidates for engineers and fleet managers: evidence, decisions, comments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.api.deps import (
    CandidateRef,
    CurrentUser,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
)
from services.api.schemas import (
    CandidateDetail,
    CandidateSummary,
    CommentIn,
    DecisionOut,
    EvaluationEpisodeOut,
    Reason,
)
from services.approval import decisions
from services.readmodel import review

router = APIRouter(
    prefix="/candidates",
    tags=["candidates"],
    responses={400: {"description": "Malformed JSON body."}},
)

_ERRORS = {
    401: {"description": "Missing or invalid token."},
    404: {"description": "No such candidate."},
}
_DECISION_ERRORS = _ERRORS | {
    403: {"description": "Only a fleet manager may decide."},
    409: {"description": "Already decided, or not in a state that can be decided."},
}


@router.get("", response_model=list[CandidateSummary], responses={401: _ERRORS[401]})
def list_candidates(session: SessionDep, user: CurrentUser) -> list[dict]:
    return review.candidate_summaries(session)


@router.get("/{ref}", response_model=CandidateDetail, responses=_ERRORS)
def get_candidate(ref: CandidateRef, session: SessionDep, user: CurrentUser) -> dict:
    return review.candidate_detail(session, ref)


@router.get("/{ref}/episodes/{task}/{seed}", response_model=EvaluationEpisodeOut, responses=_ERRORS)
def get_evaluation_episode(
    ref: CandidateRef,
    task: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")],
    seed: Annotated[int, Path(ge=0, le=2**31 - 1)],
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> dict:
    """One evaluation episode with its trajectory, and the champion's on the same seed."""
    return review.evaluation_episode(session, settings, ref, task, seed)


@router.post("/{ref}/approve", response_model=DecisionOut, responses=_DECISION_ERRORS)
def approve(ref: CandidateRef, body: Reason, session: WriteSessionDep, user: CurrentUser):
    return _out(decisions.approve(session=session, candidate_id=ref, user=user, reason=body.reason))


@router.post("/{ref}/reject", response_model=DecisionOut, responses=_DECISION_ERRORS)
def reject(ref: CandidateRef, body: Reason, session: WriteSessionDep, user: CurrentUser):
    return _out(decisions.reject(session=session, candidate_id=ref, user=user, reason=body.reason))


@router.post("/{ref}/comments", response_model=DecisionOut, status_code=201, responses=_ERRORS)
def add_comment(ref: CandidateRef, body: CommentIn, session: WriteSessionDep, user: CurrentUser):
    return _out(decisions.comment(session=session, candidate_id=ref, user=user, text=body.text))


def _out(decision) -> DecisionOut:
    return DecisionOut(
        kind=decision.kind,
        verdict=decision.verdict,
        actor=decision.actor,
        reason=decision.reason,
        at=decision.created_at,
    )
