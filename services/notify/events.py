"""What is worth telling: which stored events become notifications, and what they say.

Every event a fleet manager wants to hear of is already a row: the audit log records approvals
requested, gate verdicts, rollbacks, halts and pauses; an ingest run counts what it
quarantined. ``AUDIT_EVENTS`` maps an audit action to the notification it makes; another
transition is one more line in it. A notification is a plain dict (stored in the outbox as
is, so a retry sends what the first attempt sent); ``services/notify/webhook.py`` shapes it
for the receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.approval.requests import APPROVAL_REQUESTED
from services.config import NotifySettings
from services.store.models import AuditEvent, Candidate, Episode, IngestRun, Rollout

# How many quarantine reasons a spike's notification lists.
REASONS_SHOWN = 5


@dataclass(frozen=True)
class AuditNotification:
    # The notification's event name, what receivers filter on.
    event: str
    # Its one-line title, from the audit row and the subject's name ("candidate 7").
    title: Callable[[AuditEvent, str], str]


def _verdict(event: AuditEvent) -> str:
    return (event.after or {}).get("verdict", "unknown")


AUDIT_EVENTS: dict[str, AuditNotification] = {
    APPROVAL_REQUESTED: AuditNotification(
        "approval-waiting", lambda e, name: f"{name.capitalize()} waits for a fleet manager"
    ),
    "gate": AuditNotification(
        "gate-verdict", lambda e, name: f"Gate verdict on {name}: {_verdict(e)}"
    ),
    "rollback": AuditNotification("rollback", lambda e, name: f"{name.capitalize()} rolled back"),
    "halt-rollout": AuditNotification("halt", lambda e, name: f"{name.capitalize()} halted"),
    "pause-rollout": AuditNotification(
        "pause", lambda e, name: f"{name.capitalize()} paused for a fleet manager"
    ),
}

QUARANTINE_SPIKE = "quarantine-spike"


def audit_key(event_id: int) -> str:
    return f"audit:{event_id}"


def from_audit(session: Session, event: AuditEvent) -> dict[str, Any] | None:
    """The notification an audit row makes, or None when it makes none."""
    kind = AUDIT_EVENTS.get(event.action)
    if kind is None:
        return None
    subject = _subject(session, event.subject_type, event.subject_id)
    return {
        "id": audit_key(event.id),
        "event": kind.event,
        "title": kind.title(event, subject["name"]),
        "text": event.reason or "",
        "subject": subject,
        "actor": event.actor,
        "at": event.at.isoformat(),
        "details": {"before": event.before, "after": event.after},
    }


def is_spike(run: IngestRun, settings: NotifySettings) -> bool:
    read = run.ingested + run.quarantined
    return run.quarantined >= settings.quarantine_spike and (
        run.quarantined >= settings.quarantine_spike_share * read
    )


def ingest_key(run_id: str) -> str:
    return f"ingest-run:{run_id}"


def from_ingest_run(session: Session, run: IngestRun) -> dict[str, Any]:
    """The notification of an ingest run that quarantined a spike of uploads."""
    reasons = session.scalars(
        select(Episode.reason)
        .where(Episode.ingest_run_id == run.id, Episode.status == "quarantined")
        .order_by(Episode.id)
        .limit(REASONS_SHOWN)
    ).all()
    read = run.ingested + run.quarantined
    return {
        "id": ingest_key(run.id),
        "event": QUARANTINE_SPIKE,
        "title": f"Ingest quarantined {run.quarantined} of {read} uploads",
        "text": "\n".join(f"- {reason}" for reason in reasons),
        "subject": {"type": "ingest-run", "id": run.id, "name": f"ingest run {run.id}"},
        "actor": "ingest",
        "at": run.finished_at.isoformat(),
        "details": {
            "ingested": run.ingested,
            "quarantined": run.quarantined,
            "skipped": run.skipped,
            "source": run.source,
        },
    }


def _subject(session: Session, kind: str, subject_id: str) -> dict[str, Any]:
    """What the event is about, named as people know it: candidates by model version."""
    subject: dict[str, Any] = {"type": kind, "id": subject_id, "name": f"{kind} {subject_id}"}
    if kind == "candidate":
        candidate = session.get(Candidate, subject_id)
        if candidate is not None and candidate.model_version is not None:
            subject |= {"model_version": candidate.model_version}
            subject["name"] = f"candidate {candidate.model_version}"
    elif kind == "rollout" and subject_id.isdigit():
        rollout = session.get(Rollout, int(subject_id))
        if rollout is not None:
            subject |= {"model_version": rollout.to_version}
            subject["name"] = f"rollout {subject_id} of version {rollout.to_version}"
    return subject
