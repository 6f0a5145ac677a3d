"""Retention removes what is older than its age, and keeps what the champion was trained on."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.curation.manifest import build_manifest
from services.curation.retention import apply_retention
from services.episode_store.index import list_episodes
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.registry.ledger import promote
from services.store import session_scope
from services.store.models import AuditEvent, Dataset, EpisodeTombstone
from tests.curation.seeded import EARLY, frames_by_episode, register, seed, store_files
from tests.ingest.logs import recording

NOW = datetime(2026, 1, 20, tzinfo=UTC)


@pytest.fixture
def home(settings, tmp_path):
    """The seeded home, plus robot-02's early episode in a newer dataset the champion lacks."""
    home = seed(settings, tmp_path / "logs")
    write_episode_mcap(
        recording(n=40, robot_id="robot-02", started_at=EARLY), home.logs / "robot-02" / "0.mcap"
    )
    [extra] = ingest_logs(settings, source=str(home.logs)).episode_ids
    home.episodes[extra] = ("robot-02", EARLY)
    newer = build_manifest(settings, scheme="uniform").id
    register(settings, "cand-3", "3", newer, parent="1")
    home.newer = newer
    return home


def test_only_episodes_older_than_the_age_go_and_the_champions_stay(settings, home):
    policy = settings.updated(retention={"episode_days": 15})  # cutoff: 2026-01-05

    report = apply_retention(policy, now=NOW)

    assert set(report.kept_for_champion) == home.of_robot("robot-00")
    assert set(report.episodes.episode_ids) == home.of_robot("robot-02")
    assert report.episodes.actor == "retention"
    assert set(frames_by_episode(settings)) == home.of_robot("robot-00") | home.of_robot("robot-01")
    with session_scope(settings.db_url) as session:
        assert session.get(Dataset, home.newer).unreproducible_at is not None
        assert session.get(Dataset, home.dataset).unreproducible_at is None  # the champion's
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "delete-episodes")
        ).all()
        assert event.actor == "retention" and "15 days" in event.reason

    # Another model takes over, trained on none of them: the old champion's data expires.
    register(settings, "cand-4", "4", "later", parent=None)
    with session_scope(settings.db_url) as session:
        promote(
            session=session,
            expected="1",
            new="4",
            candidate_id="cand-4",
            actor="test",
            reason="new champion",
        )
    later = apply_retention(policy, now=NOW)
    assert later.kept_for_champion == []
    assert set(later.episodes.episode_ids) == home.of_robot("robot-00")
    assert set(frames_by_episode(settings)) == home.of_robot("robot-01")
    with session_scope(settings.db_url) as session:
        assert session.get(Dataset, home.dataset).unreproducible_at is not None


def test_raw_uploads_older_than_the_age_are_removed(settings, home):
    old = NOW - timedelta(days=30)
    expired = sorted((home.logs / "robot-00").iterdir())
    for path in expired:
        os.utime(path, (old.timestamp(), old.timestamp()))
    recent = {p for p in home.logs.rglob("*") if p.is_file()} - set(expired)
    policy = settings.updated(retention={"raw_days": 10}, fleet={"fleet_logs": str(home.logs)})

    dry = apply_retention(policy, now=NOW, dry_run=True)
    assert len(dry.raw_removed) == 2 and (home.logs / "robot-00" / "0.mcap").exists()

    report = apply_retention(policy, now=NOW)

    assert sorted(report.raw_removed) == [str(p) for p in expired]
    assert not list((home.logs / "robot-00").iterdir())
    assert {p for p in home.logs.rglob("*") if p.is_file()} == recent
    assert len(list_episodes(settings)) == 6  # the episodes stay: only their logs are gone
    with session_scope(settings.db_url) as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "remove-raw-uploads")
        ).all()
        assert event.actor == "retention" and len(event.after["uris"]) == 2


def test_a_dry_run_and_the_default_change_nothing(settings, home):
    files, logs = store_files(settings), sorted(home.logs.rglob("*"))
    off = apply_retention(settings, now=NOW + timedelta(days=3650))
    assert (off.raw_removed, off.episodes, off.kept_for_champion) == ([], None, [])

    policy = settings.updated(
        retention={"episode_days": 15, "raw_days": 1}, fleet={"fleet_logs": str(home.logs)}
    )
    dry = apply_retention(policy, now=NOW + timedelta(days=3650), dry_run=True)
    assert dry.episodes.dry_run and set(dry.episodes.episode_ids) >= home.of_robot("robot-02")
    assert len(dry.raw_removed) == 6

    assert store_files(settings) == files and sorted(home.logs.rglob("*")) == logs
    assert len(list_episodes(settings)) == 6
    with session_scope(settings.db_url) as session:
        assert not session.scalars(select(EpisodeTombstone)).all()
