"""Rolling an approved candidate out to the fleet, and the champion ledger.

The promotion ledger (``ledger.py``) is the record of who is champion; a rollout changes it
by compare-and-set, in the same transaction as the fleet's assignments. The MLflow
``champion`` alias moves only after that commits, and ``reconcile_champion`` repairs the
alias if a crash fell between the two writes.

This first version rolls out in one stage to every robot; staged canaries with automatic
rollback on fleet metrics build on these same rows.
"""

from __future__ import annotations

from sqlalchemy import select

from services.config import Settings
from services.rollout.assignments import assign, fleet
from services.rollout.ledger import champion_of, promote
from services.store import record_audit, session_scope
from services.store.models import Candidate, Rollout, utcnow


class RolloutError(Exception):
    """The rollout cannot start or change in the state it is in."""


def start_rollout(settings: Settings, candidate_id: str, *, actor: str) -> Rollout:
    """Roll an approved candidate out to every robot and make it champion (idempotent)."""
    with session_scope(settings.db_url, write=True) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        done = session.scalar(select(Rollout).where(Rollout.candidate_id == candidate_id))
        if done is not None:
            rollout = done
        else:
            if candidate.status != "approved":
                raise RolloutError(
                    f"candidate {candidate_id} is {candidate.status}: only an approved candidate "
                    "rolls out"
                )
            robots = [r.id for r in fleet(session=session)]
            # The candidate was evaluated against its parent: only that champion may be replaced.
            previous = candidate.parent_version
            promote(
                session=session,
                expected=previous,
                new=candidate.model_version,
                candidate_id=candidate_id,
                actor=actor,
                reason=f"approved candidate {candidate_id}",
            )
            rollout = Rollout(
                candidate_id=candidate_id,
                from_version=previous,
                to_version=candidate.model_version,
                stages=[{"name": "all", "share": 1.0, "robots": robots, "outcome": "completed"}],
                state="completed",
                reason=f"approved candidate {candidate_id}",
                finished_at=utcnow(),
            )
            session.add(rollout)
            assign(
                session=session,
                robot_ids=robots,
                version=candidate.model_version,
                actor=actor,
                reason=f"rollout of candidate {candidate_id}",
            )
            candidate.status = "deployed"
            record_audit(
                session,
                actor=actor,
                action="rollout",
                subject_type="candidate",
                subject_id=candidate_id,
                before={"champion": previous},
                after={"champion": candidate.model_version, "robots": len(robots)},
                reason="approved; rolled out to the whole fleet",
            )
    reconcile_champion(settings)
    return rollout


def roll_out_late_approvals(settings: Settings, *, actor: str) -> list[str]:
    """Roll out candidates approved after their night stopped waiting; returns the outcomes.

    Only a candidate evaluated against the current champion may replace it. One whose
    champion has changed since is marked superseded (it must be evaluated again), so it is
    not retried every night.
    """
    from services.approval.requests import approved_not_rolled_out

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
        rollout = start_rollout(settings, candidate_id, actor=actor)
        outcomes.append(f"candidate {candidate_id} rolled out as champion {rollout.to_version}")
    return outcomes


def rollback(settings: Settings, *, actor: str, reason: str) -> Rollout:
    """Return the fleet and the champion to the version before the last rollout."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason")
    with session_scope(settings.db_url, write=True) as session:
        last = session.scalar(
            select(Rollout).where(Rollout.state == "completed").order_by(Rollout.id.desc()).limit(1)
        )
        if last is None or last.from_version is None:
            raise RolloutError("nothing to roll back: no rollout replaced an earlier champion")
        promote(
            session=session,
            expected=last.to_version,
            new=last.from_version,
            candidate_id=last.candidate_id,
            actor=actor,
            reason=reason,
            kind="rollback",
        )
        robots = [r.id for r in fleet(session=session)]
        assign(
            session=session, robot_ids=robots, version=last.from_version, actor=actor, reason=reason
        )
        last.state = "rolled_back"
        last.reason = reason
        candidate = session.get(Candidate, last.candidate_id)
        candidate.status = "rolled_back"
        record_audit(
            session,
            actor=actor,
            action="rollback",
            subject_type="rollout",
            subject_id=str(last.id),
            before={"champion": last.to_version},
            after={"champion": last.from_version},
            reason=reason,
        )
    reconcile_champion(settings)
    return last


def reconcile_champion(settings: Settings) -> bool:
    """Move the MLflow alias to the ledger's champion if they differ; True if it moved."""
    from services.registry.mlflow_registry import champion_version, set_champion

    with session_scope(settings.db_url) as session:
        ledger = champion_of(session=session)
    if ledger is None or champion_version(settings) == ledger:
        return False
    set_champion(settings, ledger)
    return True
