"""The same episode uploaded twice is stored once; quarantined uploads can be retried."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from sqlalchemy import select

from services.curation.deletion import delete_episodes
from services.curation.manifest import build_manifest
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.ingest.mapping import parse_mapping
from services.readmodel.review import audit_log
from services.store import session_scope
from services.store.models import DatasetEpisode, IngestRun
from tests.ingest.logs import recording
from tests.ingest.ros_logs import T0, episode_messages, write_ros2_mcap

STATISTICS = 0x0B  # MCAP's Statistics record: part of the summary section
FOOTER = struct.Struct("<BQQQI")  # opcode, length, summary start, summary offset start, CRC


def three_episode_mcap(path: Path) -> Path:
    """A ROS 2 MCAP holding three episodes (each ends with its outcome message)."""
    messages = []
    for n, steps in enumerate((10, 11, 12)):
        messages += episode_messages(steps=steps, start_ns=T0 + n * 3 * 10**9)
    return write_ros2_mcap(messages, path)


def damaged_summary(data: bytes, k: int) -> bytes:
    """The MCAP with its summary's message count changed: other bytes, the same messages
    (the streaming reader reads the summary's records but no reader trusts their counts)."""
    _, _, start, end, _ = FOOTER.unpack(data[-8 - FOOTER.size : -8])
    damaged = bytearray(data)
    position = start
    while position < end:
        opcode, length = struct.unpack_from("<BQ", data, position)
        if opcode == STATISTICS:
            (count,) = struct.unpack_from("<Q", data, position + 9)
            struct.pack_into("<Q", damaged, position + 9, count + k)
            return bytes(damaged)
        position += 9 + length
    raise AssertionError("no Statistics record in the summary")


def test_copies_damaged_in_the_summary_are_duplicates_of_the_stored_episodes(
    store_settings, tmp_path
):
    logs = tmp_path / "logs"
    original = three_episode_mcap(logs / "robot" / "run.mcap").read_bytes()
    first = ingest_logs(store_settings, source=str(logs))
    assert (first.ingested, first.duplicates) == (3, 0)
    stored = set(first.episode_ids)
    store = EpisodeStore(store_settings.episode_store)
    files = store.data_files()

    for k in (1, 2, 3):
        (logs / "copies" / f"copy-{k}.mcap").parent.mkdir(exist_ok=True)
        (logs / "copies" / f"copy-{k}.mcap").write_bytes(damaged_summary(original, k))
    again = ingest_logs(store_settings, source=str(logs))

    assert (again.ingested, again.duplicates, again.quarantined) == (0, 9, 0)
    assert again.skipped == 1  # the original's bytes, already indexed
    assert store.data_files() == files  # nothing written to the store's data again
    duplicates = list_episodes(store_settings, status="duplicate")
    assert len(duplicates) == 9
    assert {d.duplicate_of for d in duplicates} == stored
    # Each copy's n-th episode repeats the original's n-th (steps 10, 11, 12).
    by_id = {e.id: e for e in list_episodes(store_settings)}
    assert all(by_id[d.duplicate_of].steps == d.steps for d in duplicates)
    assert all(d.episode_index is None and d.data_file is None for d in duplicates)
    with session_scope(store_settings.db_url) as session:
        assert session.get(IngestRun, again.run_id).duplicates == 9

    dataset = build_manifest(store_settings, scheme="uniform")
    with session_scope(store_settings.db_url) as session:
        used = set(
            session.scalars(
                select(DatasetEpisode.episode_id).where(DatasetEpisode.dataset_id == dataset.id)
            )
        )
    assert used <= stored and used  # held-out episodes aside, only the stored ones

    third = ingest_logs(store_settings, source=str(logs))
    assert (third.ingested, third.duplicates, third.skipped) == (0, 0, 4)


def test_episodes_repeated_in_one_batch_are_stored_once(settings, tmp_path):
    logs = tmp_path / "logs"
    three_episode_mcap(logs / "a.mcap")
    shutil.copy(logs / "a.mcap", logs / "b.mcap")  # the same bytes: skipped by content hash
    (logs / "c.mcap").write_bytes(damaged_summary((logs / "a.mcap").read_bytes(), 1))

    summary = ingest_logs(settings, source=str(logs))

    assert (summary.ingested, summary.duplicates, summary.skipped) == (3, 3, 1)


def test_the_same_logged_episode_id_from_the_same_robot_is_a_duplicate(settings, tmp_path):
    logs = tmp_path / "logs"
    first = recording(n=20, episode_uuid="ep-1")
    write_episode_mcap(first, logs / "first.mcap")
    # Re-recorded with other numbers but under the same episode id, by the same robot...
    write_episode_mcap(recording(n=21, episode_uuid="ep-1"), logs / "again.mcap")
    # ...and by another robot, whose ids are its own.
    write_episode_mcap(recording(n=22, episode_uuid="ep-1", robot_id="robot-01"), logs / "o.mcap")

    summary = ingest_logs(settings, source=str(logs))

    assert (summary.ingested, summary.duplicates) == (2, 1)
    [duplicate] = list_episodes(settings, status="duplicate")
    assert duplicate.source_episode_uuid == "ep-1" and duplicate.robot_id == "robot-00"


def test_a_copy_of_a_deleted_episode_with_other_bytes_stays_deleted(settings, tmp_path):
    logs = tmp_path / "logs"
    original = three_episode_mcap(logs / "run.mcap").read_bytes()
    first = ingest_logs(settings, source=str(logs))
    delete_episodes(settings, ids=first.episode_ids[:1], reason="asked", actor="fatima")
    (logs / "copy.mcap").write_bytes(damaged_summary(original, 1))

    again = ingest_logs(settings, source=str(logs))

    assert (again.ingested, again.duplicates, again.tombstoned) == (0, 2, 2)


WRONG = {"topics": {"state": "/arm/joints"}}  # the fleet's state is on /joint_states
RIGHT = {"topics": {"state": {"topic": "/joint_states", "fields": ["position"]}}}


@pytest.fixture
def quarantined_log(store_settings, tmp_path) -> Path:
    logs = tmp_path / "logs"
    three_episode_mcap(logs / "robot" / "run.mcap")
    summary = ingest_logs(store_settings, source=str(logs), mapping=parse_mapping(WRONG))
    assert (summary.ingested, summary.quarantined) == (0, 1)
    return logs


def test_a_quarantined_log_is_retried_after_the_mapping_is_fixed(store_settings, quarantined_log):
    [old] = list_episodes(store_settings, status="quarantined")
    assert "/arm/joints" in old.reason

    fixed = parse_mapping(RIGHT)
    skipped = ingest_logs(store_settings, source=str(quarantined_log), mapping=fixed)
    assert (skipped.ingested, skipped.skipped) == (0, 1)  # not without being asked

    retried = ingest_logs(
        store_settings, source=str(quarantined_log), mapping=fixed, retry_quarantined=True
    )

    assert (retried.ingested, retried.quarantined) == (3, 0)
    assert list_episodes(store_settings, status="quarantined") == []
    assert len(list_episodes(store_settings, status="ok")) == 3
    with session_scope(store_settings.db_url) as session:
        history = audit_log(session, subject_id=old.id)
    assert [h["action"] for h in history] == ["retry-quarantined", "quarantine"]
    assert all(h["reason"] == old.reason for h in history)  # the earlier reason stays
    assert history[0]["after"]["status"] == "ok"
    # Retried again, nothing is left to retry.
    again = ingest_logs(
        store_settings, source=str(quarantined_log), mapping=fixed, retry_quarantined=True
    )
    assert (again.ingested, again.quarantined, again.skipped) == (0, 0, 1)


def test_a_retry_that_fails_again_keeps_one_row_with_the_new_reason(settings, tmp_path):
    logs = tmp_path / "logs"
    three_episode_mcap(logs / "run.mcap")
    ingest_logs(settings, source=str(logs), mapping=parse_mapping(WRONG))
    other = parse_mapping({"topics": {"state": "/still/wrong"}})

    retried = ingest_logs(settings, source=str(logs), mapping=other, retry_quarantined=True)

    assert retried.quarantined == 1
    [row] = list_episodes(settings, status="quarantined")
    assert "/still/wrong" in row.reason
    with session_scope(settings.db_url) as session:
        history = audit_log(session, subject_id=row.id)
    reasons = [h["reason"] for h in history]
    assert any("/arm/joints" in r for r in reasons) and "/still/wrong" in reasons[0]


def test_a_retry_does_not_bring_back_a_deleted_quarantined_upload(settings, tmp_path):
    logs = tmp_path / "logs"
    three_episode_mcap(logs / "run.mcap")
    ingest_logs(settings, source=str(logs), mapping=parse_mapping(WRONG))
    [row] = list_episodes(settings, status="quarantined")
    delete_episodes(settings, ids=[row.id], reason="operator's face", actor="fatima")

    retried = ingest_logs(settings, source=str(logs), retry_quarantined=True)

    assert (retried.ingested, retried.tombstoned) == (0, 1)
    assert list_episodes(settings) == []
