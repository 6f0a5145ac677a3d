"""The notification outbox: notifications owed, read from the store past a cursor.

The events themselves are already rows (the audit log, the ingest runs), written in the
transaction of the change they record, so nothing that makes an event knows of
notifications, and an event is never lost: ``collect`` turns the rows past the cursor into
deliveries and moves the cursor in one transaction. The cursor starts where the store stands
on the first pass: notifications begin when the webhook is set, not with the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.config import NotifySettings, Settings
from services.notify.events import (
    AUDIT_EVENTS,
    audit_key,
    from_audit,
    from_ingest_run,
    ingest_key,
    is_spike,
)
from services.store import session_scope
from services.store.models import (
    AuditEvent,
    IngestRun,
    NotificationCursor,
    NotificationDelivery,
    utcnow,
)

# PostgreSQL hands out ids at insert, not at commit: an audit row may commit after one with a
# higher id that a pass already read. Rows this recent (seconds) are read again, and those
# already owed skipped; Flywheel's transactions that write audit rows last well under it.
LATE_COMMIT_S = 300.0


@dataclass(frozen=True)
class Owed:
    """A delivery claimed for one attempt."""

    id: int
    key: str
    body: dict
    attempts: int


def collect(settings: Settings, *, now: datetime | None = None) -> int:
    """Add the notifications of events past the cursor to the outbox, due ``now`` (default:
    the present); how many were added."""
    now = now or utcnow()
    try:
        with session_scope(settings.db_url, write=True) as session:
            cursor = session.get(NotificationCursor, 1)
            if cursor is None:
                session.add(_cursor_at_present(session, now))
                return 0
            recent = max(cursor.since, now - timedelta(seconds=LATE_COMMIT_S))
            added = 0
            events = select(AuditEvent).where(
                AuditEvent.action.in_(AUDIT_EVENTS),
                or_(AuditEvent.id > cursor.audit_event_id, AuditEvent.at >= recent),
            )
            for event in session.scalars(events.order_by(AuditEvent.id)):
                if not _owed(session, audit_key(event.id)):
                    session.add(_delivery(from_audit(session, event), now))
                    added += 1
                cursor.audit_event_id = max(cursor.audit_event_id, event.id)
            runs = select(IngestRun).where(IngestRun.finished_at.is_not(None))
            if cursor.ingest_finished_at is not None:
                runs = runs.where(
                    or_(
                        IngestRun.finished_at > cursor.ingest_finished_at,
                        IngestRun.finished_at >= recent,
                    )
                )
            for run in session.scalars(runs.order_by(IngestRun.finished_at)):
                # Read again while recent, and a resumed run finishes again: owed once.
                if is_spike(run, settings.notify) and not _owed(session, ingest_key(run.id)):
                    session.add(_delivery(from_ingest_run(session, run), now))
                    added += 1
                if cursor.ingest_finished_at is None or run.finished_at > cursor.ingest_finished_at:
                    cursor.ingest_finished_at = run.finished_at
            return added
    except IntegrityError:
        # Another notifier collected the same events first (PostgreSQL: no write lock up
        # front); its rows stand, and the next pass reads on from its cursor.
        return 0


def _owed(session, key: str) -> bool:
    return (
        session.scalar(select(NotificationDelivery.id).where(NotificationDelivery.key == key))
        is not None
    )


def _cursor_at_present(session, now: datetime) -> NotificationCursor:
    return NotificationCursor(
        id=1,
        since=now,
        audit_event_id=session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))),
        ingest_finished_at=session.scalar(select(func.max(IngestRun.finished_at))),
    )


def _delivery(notification: dict, now: datetime) -> NotificationDelivery:
    return NotificationDelivery(
        key=notification["id"],
        event=notification["event"],
        body=notification,
        created_at=now,
        next_attempt_at=now,
    )


def claim_due(settings: Settings, *, now: datetime) -> Owed | None:
    """The oldest pending delivery, claimed for one attempt (its attempt counted), if it is
    due now. Notifications go out in the order of their events: a later one waits while an
    earlier one backs off (for at most ``max_attempts`` attempts).

    The claim is a compare-and-set on the attempt count, and it puts the next attempt a
    request's timeout ahead, so a second notifier neither sends it at the same time nor
    takes it for lost while the first one is posting.
    """
    with session_scope(settings.db_url, write=True) as session:
        row = session.scalar(
            select(NotificationDelivery)
            .where(NotificationDelivery.status == "pending")
            .order_by(NotificationDelivery.id)
            .limit(1)
        )
        if row is None or row.next_attempt_at > now:
            return None
        attempt = row.attempts + 1
        claimed = session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == row.id, NotificationDelivery.attempts == row.attempts)
            .values(
                attempts=attempt,
                next_attempt_at=now + timedelta(seconds=2 * settings.notify.timeout_s),
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        return Owed(row.id, row.key, row.body, attempt)


def delivered(settings: Settings, owed: Owed, *, now: datetime) -> None:
    with session_scope(settings.db_url, write=True) as session:
        row = session.get(NotificationDelivery, owed.id)
        row.status, row.delivered_at, row.last_error = "delivered", now, None


def attempt_failed(settings: Settings, owed: Owed, error: str, *, now: datetime) -> None:
    """Note the failure; the next attempt waits out the backoff, or the delivery is given up."""
    with session_scope(settings.db_url, write=True) as session:
        row = session.get(NotificationDelivery, owed.id)
        row.last_error = error
        if owed.attempts >= settings.notify.max_attempts:
            row.status = "failed"
        else:
            row.next_attempt_at = now + timedelta(seconds=backoff(settings.notify, owed.attempts))


def backoff(settings: NotifySettings, attempts: int) -> float:
    """The wait after ``attempts`` failed attempts: doubling from backoff_s, capped."""
    return min(settings.backoff_s * 2 ** (attempts - 1), settings.backoff_max_s)


def next_due(settings: Settings) -> datetime | None:
    """When the oldest pending delivery, the next one sent, is due (a background notifier
    sleeps until then)."""
    with session_scope(settings.db_url) as session:
        return session.scalar(
            select(NotificationDelivery.next_attempt_at)
            .where(NotificationDelivery.status == "pending")
            .order_by(NotificationDelivery.id)
            .limit(1)
        )


def counts(settings: Settings) -> dict[str, int]:
    """Deliveries by status (what `flywheel notify` prints)."""
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(NotificationDelivery.status, func.count()).group_by(NotificationDelivery.status)
        ).all()
    return {"pending": 0, "delivered": 0, "failed": 0} | dict(rows)
