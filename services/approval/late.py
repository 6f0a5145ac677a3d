"""Late approvals: a candidate approved after its night stopped waiting rolls out at the
start of the next night, unless the champion it was evaluated against has been replaced."""

from __future__ import annotations

from sqlalchemy import select

from services.config import Settings
from services.registry.ledger import champion_of
from services.rollout.controller import RolloutError, start_rollout
from services.rollout.stages import current_stage
from services.store import record_audit, session_scope
from services.store.models import Candidate, NightlyRun, Rollout


def roll_out_approved(settings: Settings, *, actor: str) -> list[str]:
    """Roll out candidates approved after their night stopped waiting; returns the outcomes.

    Only a candidate evaluated against the current champion may replace it. One whose
    champion has changed since is marked superseded (it must be evaluated again), so it is
    not retried every night.
    """
    outcomes = []
    for candidate_id in approved_not_rolled_out(settings):
        with session_scope(settings.db_url, write=True) as session:
            candidate = session.get(Candidate, candidate_id)
            champion = champion_of(session=session)
            if candidate.parent_version != champion:
                candidate.status = "superseded"
                reason = (
                    f"approved against champion {candidate.parent_version}, but the champion "
                    f"is now {champion}: evaluate it again before it can roll out"
                )
                record_audit(
                    session,
                    actor=actor,
                    action="supersede",
                    subject_type="candidate",
                    subject_id=candidate_id,
                    before={"status": "approved"},
                    after={"status": "superseded"},
                    reason=reason,
                )
                outcomes.append(f"candidate {candidate_id} superseded: {reason}")
                continue
        try:
            rollout = start_rollout(settings, candidate_id, actor=actor)
        except RolloutError as exc:  # another rollout is still going: try again next night
            outcomes.append(f"candidate {candidate_id} waits: {exc}")
            continue
        outcomes.append(
            f"candidate {candidate_id} rollout {rollout.id} started: "
            f"{current_stage(rollout).name} stage"
        )
    return outcomes


def approved_not_rolled_out(settings: Settings) -> list[str]:
    """Approved candidates with no rollout yet, oldest first.

    A candidate of a night still running (one that took over from a dead run carries its
    candidate) is left to that night, which rolls it out in its own order.
    """
    with session_scope(settings.db_url) as session:
        rolled = select(Rollout.candidate_id)
        tonight = select(NightlyRun.candidate_id).where(
            NightlyRun.state == "running", NightlyRun.candidate_id.is_not(None)
        )
        return list(
            session.scalars(
                select(Candidate.id)
                .where(
                    Candidate.status == "approved",
                    Candidate.id.not_in(rolled),
                    Candidate.id.not_in(tonight),
                )
                .order_by(Candidate.created_at)
            )
        )
