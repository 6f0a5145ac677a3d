"""Request and response bodies of the review API (they make its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

# Free text for reasons and comments: at least one visible character (a blank reason explains
# nothing) and no control characters but tab and newline (PostgreSQL refuses NUL bytes).
# A pattern rather than a validator, so the OpenAPI schema says it too.
_ALLOWED = r"[^\x00-\x08\x0b-\x1f\x7f]"
_VISIBLE = r"[^\s\x00-\x08\x0b-\x1f\x7f]"
Text = Annotated[
    str, Field(min_length=1, max_length=2000, pattern=f"^{_ALLOWED}*{_VISIBLE}{_ALLOWED}*$")
]
Role = Literal["engineer", "fleet-manager", "admin"]


class Reason(BaseModel):
    reason: Text = Field(description="Why: kept in the audit log.")


class CommentIn(BaseModel):
    text: Text


class Rate(BaseModel):
    successes: int
    n: int
    rate: float
    ci: list[float] = Field(description="Wilson 95% interval, [low, high].")


class TaskResult(BaseModel):
    task: str
    suite: str
    candidate: Rate
    champion: Rate | None
    difference: float | None
    difference_lower_bound: float | None = Field(
        description="One-sided paired-bootstrap bound used for non-inferiority."
    )
    candidate_only: int
    champion_only: int


class Gate(BaseModel):
    verdict: str
    reason: str | None
    numbers: dict[str, Any]


class DecisionOut(BaseModel):
    kind: str
    verdict: str
    actor: str
    reason: str | None
    at: datetime


class FailingEpisode(BaseModel):
    id: int
    task: str
    seed: int
    steps: int
    final_reward: float
    champion_succeeded: bool | None


class CandidateSummary(BaseModel):
    id: str
    model_version: str | None
    parent_version: str | None
    dataset_id: str
    policy: str
    status: str
    gate: str | None
    gate_reason: str | None
    approval: str | None
    approved_by: str | None
    created_at: datetime


class CandidateDetail(BaseModel):
    id: str
    model_version: str | None
    parent_version: str | None
    dataset_id: str
    policy: str
    status: str
    mlflow_run_id: str | None
    flow_run_id: str | None
    code_version: str | None
    train_seconds: float | None
    final_loss: float | None
    created_at: datetime
    champion_version: str | None
    tasks: list[TaskResult]
    offline: dict[str, dict[str, Any]]
    gate: Gate | None
    decisions: list[DecisionOut]
    lineage: dict[str, Any] | None
    failing_episodes: list[FailingEpisode]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None


class UserOut(BaseModel):
    name: str
    role: Role


class NewUser(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
    role: Role


class IssuedToken(BaseModel):
    name: str
    role: Role
    token: str = Field(description="Shown once; only its hash is stored.")


class Trajectory(BaseModel):
    steps: int
    states: list[list[float]]
    actions: list[list[float]]
    rewards: list[float]


class EpisodeSide(BaseModel):
    model_version: str
    success: bool
    steps: int
    final_reward: float
    trajectory: Trajectory | None = Field(description="None if it was not kept.")
    video: bool = Field(
        False, description="Whether the evaluation filmed it (a failure the review page shows)."
    )


class EvaluationEpisodeOut(BaseModel):
    candidate_id: str
    task: str
    seed: int
    candidate: EpisodeSide
    champion: EpisodeSide | None
