"""Deleting episodes on request: exactly those frames and rows go; people learn who used them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.curation.deletion import DeletionError, delete_episodes
from services.curation.manifest import build_manifest, read_manifest
from services.episode_store.index import list_episodes
from services.readmodel.lineage import model_lineage
from services.store import session_scope
from services.store.models import (
    AuditEvent,
    Dataset,
    DatasetEpisode,
    EpisodeTombstone,
    Intervention,
)
from tests.curation.seeded import LATE, frames_by_episode, seed, store_files


@pytest.fixture
def home(store_settings, tmp_path):
    return seed(store_settings, tmp_path / "logs")


def test_deleting_a_robots_episodes_removes_exactly_their_frames_and_rows(store_settings, home):
    before = frames_by_episode(store_settings)
    gone = home.of_robot("robot-00")

    report = delete_episodes(
        store_settings, robots=["robot-00"], reason="robot-00's owner asked", actor="fatima"
    )

    assert set(report.episode_ids) == gone and report.robots == {"robot-00": 2}
    after = frames_by_episode(store_settings)  # read back from the rewritten Parquet file
    assert set(after) == set(before) - gone
    for episode_id, frames in after.items():  # the others keep every value, indices included
        assert frames == before[episode_id]
    assert report.data_files == ["data/chunk-000/file-000.parquet"]
    indexed = {e.id for e in list_episodes(store_settings)}
    assert indexed.isdisjoint(gone) and len(indexed) == 3  # robot-01's two, the quarantined
    with session_scope(store_settings.db_url) as session:
        assert not session.scalars(
            select(Intervention).where(Intervention.episode_id.in_(gone))
        ).all()
        assert not session.scalars(
            select(DatasetEpisode).where(DatasetEpisode.episode_id.in_(gone))
        ).all()
        tombstones = session.scalars(select(EpisodeTombstone)).all()
        assert {t.episode_id for t in tombstones} == gone
        assert all(t.datasets == [home.dataset] and t.actor == "fatima" for t in tombstones)
        dataset = session.get(Dataset, home.dataset)
        assert dataset.unreproducible_at is not None
        assert "robot-00's owner asked" in dataset.unreproducible_reason
        assert session.get(Dataset, "later").unreproducible_at is None
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "delete-episodes")
        ).all()
        assert (event.actor, event.reason) == ("fatima", "robot-00's owner asked")
        assert set(event.before["episodes"]) == gone

    assert report.datasets == [home.dataset]
    models = {(m.model_version, m.via, m.champion) for m in report.models}
    assert models == {("1", f"dataset {home.dataset}", True), ("2", "version 1", False)}
    lineage = model_lineage(store_settings, "1")["chain"][0]  # what the review page shows
    assert lineage["dataset"]["reproducible"] is False
    assert (lineage["dataset"]["deleted_episodes"], lineage["episodes"]) == (2, 2)

    # Every future dataset leaves them out; the old manifest still names them (not reproducible).
    rebuilt = build_manifest(store_settings, scheme="sirius")
    header, _ = read_manifest(store_settings, rebuilt.id)
    assert {e["id"] for e in header["episodes"]} == home.of_robot("robot-01")
    old, _ = read_manifest(store_settings, home.dataset)
    assert gone <= {e["id"] for e in old["episodes"]}


def test_deleting_by_time_range_and_by_ids(store_settings, home):
    late = delete_episodes(
        store_settings,
        since=datetime(2026, 1, 5, tzinfo=UTC),
        until=datetime(2026, 2, 1, tzinfo=UTC),
        reason="recorded in the wrong building",
        actor="fatima",
    )
    assert set(late.episode_ids) == home.of_robot("robot-01")

    first = sorted(home.of_robot("robot-00"))[0]
    by_id = delete_episodes(
        store_settings, ids=[first, home.quarantined[0]], reason="asked", actor="fatima"
    )
    assert set(by_id.episode_ids) == {first, home.quarantined[0]}
    assert set(frames_by_episode(store_settings)) == home.of_robot("robot-00") - {first}

    again = delete_episodes(store_settings, ids=[first], reason="asked twice", actor="fatima")
    assert again.episode_ids == [] and again.already_deleted == [first]


def test_a_dry_run_changes_nothing_and_says_what_would_go(store_settings, home):
    files = store_files(store_settings)
    report = delete_episodes(
        store_settings, robots=["robot-00"], reason="asked", actor="fatima", dry_run=True
    )
    assert set(report.episode_ids) == home.of_robot("robot-00")
    assert report.data_files == ["data/chunk-000/file-000.parquet"]
    assert report.datasets == [home.dataset] and len(report.models) == 2
    assert store_files(store_settings) == files
    assert len(list_episodes(store_settings)) == 5
    with session_scope(store_settings.db_url) as session:
        assert not session.scalars(select(EpisodeTombstone)).all()
        assert session.get(Dataset, home.dataset).unreproducible_at is None
        assert not session.scalars(
            select(AuditEvent).where(AuditEvent.action == "delete-episodes")
        ).all()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({}, "choose what to delete"),
        ({"ids": ["0000000000000000"]}, "no episode with id 0000000000000000"),
        ({"robots": ["robot-77"]}, "no indexed episode matches"),
        ({"since": LATE, "until": datetime(2026, 1, 2, tzinfo=UTC)}, "is not before --until"),
        ({"since": datetime(2026, 1, 2)}, "has no time zone"),
        ({"robots": ["robot-00"], "reason": "  "}, "a reason is required"),
    ],
)
def test_bad_requests_are_refused_and_delete_nothing(store_settings, home, request_, message):
    files = store_files(store_settings)
    request_ = {"reason": "asked", **request_}
    with pytest.raises(DeletionError, match=message):
        delete_episodes(store_settings, actor="fatima", **request_)
    assert store_files(store_settings) == files
    assert len(list_episodes(store_settings)) == 5
