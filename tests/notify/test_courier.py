"""Notifications delivered to a real webhook receiver on 127.0.0.1: every event kind once, in
both shapes; retried after failures; kept while the receiver is down; never waited for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.approval.requests import open_approval_request
from services.evaluation.gate import PASS, GateVerdict, record_verdict
from services.notify import outbox
from services.notify.courier import deliver_pending, notify_in_background
from services.store import record_audit, session_scope
from services.store.models import AuditEvent, Episode, IngestRun, Rollout
from tests.conftest import add_candidate
from tests.notify.receiver import Receiver, closed_port

START = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


class Clock:
    """The notifier's now, moved by the test: backoffs pass without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _on(settings, url: str, form: str = "json"):
    return settings.updated(notify={"webhook_url": url, "format": form, "backoff_s": 2.0})


def _night_of_events(settings) -> None:
    """One of each event: a gate verdict, an approval waiting, a rollback, a halt, a pause,
    an ingest run that quarantined most of what it read, and a comment (no notification)."""
    url = settings.db_url
    add_candidate(url, "c7", version="7", status="registered")
    record_verdict(url, "c7", GateVerdict(PASS, "better with confidence: 30/40 vs 12/40", {}))
    assert open_approval_request(settings, "c7").status == "awaiting"
    assert open_approval_request(settings, "c7").status == "awaiting"  # asked once, told once
    with session_scope(url) as session:
        session.add(Rollout(id=3, candidate_id="c7", from_version="6", to_version="7"))
        for action, reason in (
            ("rollback", "failure rate worse than the champion's (SPRT)"),
            ("halt-rollout", "e-stop on robot-02"),
            ("pause-rollout", "stage maximum reached without a decision"),
        ):
            record_audit(
                session,
                actor="rollout-controller",
                action=action,
                subject_type="rollout",
                subject_id="3",
                after={"state": action},
                reason=reason,
            )
        record_audit(
            session,
            actor="erin",
            action="comment",
            subject_type="candidate",
            subject_id="c7",
            reason="looks fine",
        )
        session.add(
            IngestRun(id="run-9", source="s3://logs", finished_at=START, ingested=2, quarantined=6)
        )
        session.flush()
        for i in range(6):
            session.add(
                Episode(
                    id=f"q{i}",
                    content_hash=f"{i}" * 64,
                    source_uri=f"s3://logs/{i}",
                    source_format="mcap",
                    ingest_run_id="run-9",
                    status="quarantined",
                    reason=f"truncated log {i}",
                )
            )


EVENTS = ["gate-verdict", "approval-waiting", "rollback", "halt", "pause", "quarantine-spike"]


def test_each_event_arrives_once_as_json(store_settings):
    settings = store_settings
    with Receiver() as receiver:
        settings = _on(settings, receiver.url)
        outbox.collect(settings)  # notifications start when the webhook is set
        _night_of_events(settings)
        first = deliver_pending(settings)
        again = deliver_pending(settings)
    assert (first.delivered, again.delivered) == (6, 0)
    assert [b["event"] for b in receiver.bodies] == EVENTS
    assert len(set(receiver.keys)) == 6
    gate, waiting, rollback, halt, pause, spike = receiver.bodies
    assert gate["title"] == "Gate verdict on candidate 7: pass"
    assert gate["subject"] == {
        "type": "candidate",
        "id": "c7",
        "name": "candidate 7",
        "model_version": "7",
    }
    assert gate["details"]["after"] == {"status": "passed", "verdict": "pass"}
    assert waiting["title"] == "Candidate 7 waits for a fleet manager"
    assert "flywheel approve 7" in waiting["text"]
    assert rollback["title"] == "Rollout 3 of version 7 rolled back"
    assert halt["text"] == "e-stop on robot-02"
    assert pause["title"] == "Rollout 3 of version 7 paused for a fleet manager"
    assert spike["title"] == "Ingest quarantined 6 of 8 uploads"
    assert spike["text"].splitlines()[0] == "- truncated log 0"
    assert spike["details"]["quarantined"] == 6
    assert outbox.counts(settings) == {"pending": 0, "delivered": 6, "failed": 0}


def test_each_event_arrives_in_slacks_shape(settings):
    with Receiver() as receiver:
        settings = _on(settings, receiver.url, "slack")
        outbox.collect(settings)
        _night_of_events(settings)
        deliver_pending(settings)
    assert len(receiver.bodies) == 6
    for body in receiver.bodies:
        assert set(body) == {"text", "blocks"}
        assert [b["type"] for b in body["blocks"]][0] == "header"
        assert body["blocks"][-1]["type"] == "context"
    halt = receiver.bodies[3]
    assert halt["text"] == "Rollout 3 of version 7 halted: e-stop on robot-02"
    assert halt["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "Rollout 3 of version 7 halted",
    }
    assert halt["blocks"][1]["text"] == {"type": "mrkdwn", "text": "e-stop on robot-02"}


def test_a_failing_receiver_gets_it_after_retries_with_backoff(settings):
    clock = Clock()
    with Receiver(fail_first=2) as receiver:
        settings = _on(settings, receiver.url)
        outbox.collect(settings)
        _night_of_events(settings)
        assert deliver_pending(settings, now=clock).failed == 1
        assert deliver_pending(settings, now=clock).delivered == 0  # backing off: not due yet
        clock.advance(2)
        assert deliver_pending(settings, now=clock).failed == 1  # second failure: wait 4 s
        clock.advance(2)
        assert deliver_pending(settings, now=clock).delivered == 0
        clock.advance(2)
        assert deliver_pending(settings, now=clock).delivered == 6
    assert receiver.posts == 2 + 6
    assert [b["event"] for b in receiver.bodies] == EVENTS


def test_retries_are_bounded(settings):
    clock = Clock()
    with Receiver(fail_first=100) as receiver:
        settings = _on(settings, receiver.url).updated(notify={"max_attempts": 3})
        outbox.collect(settings)
        _night_of_events(settings)
        assert outbox.collect(settings, now=clock()) == 6
        passes = 0
        while outbox.counts(settings)["pending"] and passes < 100:
            deliver_pending(settings, now=clock)
            clock.advance(3600)
            passes += 1
    # each notification given up after 3 attempts, in order, so the later ones were tried too
    assert receiver.posts == passes == 6 * 3
    assert outbox.counts(settings) == {"pending": 0, "delivered": 0, "failed": 6}


def test_a_receiver_that_is_down_loses_nothing_and_fails_no_one(store_settings):
    settings = store_settings
    clock = Clock()
    port = closed_port()
    settings = _on(settings, f"http://127.0.0.1:{port}/hook")
    outbox.collect(settings)
    _night_of_events(settings)
    down = deliver_pending(settings, now=clock)  # returns; does not raise
    assert (down.delivered, down.failed) == (0, 1)
    assert outbox.counts(settings)["pending"] == 6
    with Receiver(port=port) as receiver:
        clock.advance(60)
        assert deliver_pending(settings, now=clock).delivered == 6
    assert [b["event"] for b in receiver.bodies] == EVENTS


def test_no_webhook_means_no_notifications(settings):
    _night_of_events(settings)
    assert deliver_pending(settings).delivered == 0
    assert notify_in_background(settings) is None
    assert outbox.counts(settings) == {"pending": 0, "delivered": 0, "failed": 0}


def test_the_night_does_not_wait_for_the_webhook(settings):
    with Receiver(hold=True) as receiver:
        settings = _on(settings, receiver.url)
        outbox.collect(settings)
        _night_of_events(settings)
        notifier = notify_in_background(settings)
        # the receiver holds every answer: the call came back with the deliveries pending
        assert outbox.counts(settings)["delivered"] == 0
        assert receiver.bodies == []
        receiver.release.set()
        assert receiver.got.wait(30)
        notifier.stop(grace_s=30)
    assert not notifier.running
    assert [b["event"] for b in receiver.bodies] == EVENTS
    assert outbox.counts(settings)["delivered"] == 6


def test_the_first_pass_starts_from_the_present(settings):
    _night_of_events(settings)  # before the webhook was set: history is not replayed
    with Receiver() as receiver:
        settings = _on(settings, receiver.url)
        assert deliver_pending(settings).delivered == 0
    assert receiver.posts == 0


@pytest.mark.parametrize("form", ["xml"])
def test_an_unknown_format_is_refused_at_load(settings, form):
    with pytest.raises(ValueError, match="json"):
        settings.updated(notify={"format": form})


def test_an_ingest_run_that_finishes_again_is_told_once(settings):
    with Receiver() as receiver:
        settings = _on(settings, receiver.url, "slack")
        outbox.collect(settings)
        _night_of_events(settings)
        deliver_pending(settings)
        with session_scope(settings.db_url) as session:  # resumed after a crash: finished later
            session.get(IngestRun, "run-9").finished_at = START + timedelta(hours=1)
            record_audit(
                session,
                actor="gate",
                action="gate",
                subject_type="candidate",
                subject_id="c7",
                after={"verdict": "fail"},
                reason="p < 0.05 & worse",
            )
        assert deliver_pending(settings).delivered == 1  # the new verdict; the run not again
    assert [b["text"] for b in receiver.bodies][-1] == (
        "Gate verdict on candidate 7: fail: p &lt; 0.05 &amp; worse"
    )
    assert len(receiver.bodies) == 7


def test_an_event_that_commits_after_a_later_one_is_not_skipped(store_settings):
    # PostgreSQL numbers rows at insert: id 999 may commit after 1000 was read.
    settings = _on(store_settings, "http://127.0.0.1:9/hook")
    add_candidate(settings.db_url, "c7", version="7", status="registered")
    outbox.collect(settings)
    with session_scope(settings.db_url) as session:
        session.add(
            AuditEvent(
                id=1000, actor="erin", action="comment", subject_type="candidate", subject_id="c7"
            )
        )
    assert outbox.collect(settings) == 0
    with session_scope(settings.db_url) as session:
        session.add(
            AuditEvent(
                id=999,
                actor="gate",
                action="gate",
                subject_type="candidate",
                subject_id="c7",
                after={"verdict": "fail"},
            )
        )
    assert outbox.collect(settings) == 1
    assert outbox.collect(settings) == 0  # read again while recent, owed once
