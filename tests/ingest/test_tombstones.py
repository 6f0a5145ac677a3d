"""A deleted episode stays deleted: ingesting its log again, under any name, or a re-upload of a
quarantined log under its own name, does not bring it back."""

from __future__ import annotations

import shutil

from services.curation.deletion import delete_episodes
from services.episode_store.index import list_episodes
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.store import session_scope
from services.store.models import IngestRun
from tests.curation.seeded import frames_by_episode, seed
from tests.ingest.datasets import write_lerobot
from tests.ingest.logs import recording


def test_reingesting_deleted_logs_skips_them_and_counts_them(store_settings, tmp_path):
    home = seed(store_settings, tmp_path / "logs", train=False)
    gone = home.of_robot("robot-00")
    delete_episodes(store_settings, robots=["robot-00"], reason="asked", actor="fatima")
    # The same bytes under another name (a robot that uploads its backlog again).
    shutil.copy(home.logs / "robot-00" / "0.mcap", home.logs / "robot-00" / "again.mcap")

    summary = ingest_logs(store_settings, source=str(home.logs))

    assert (summary.ingested, summary.tombstoned) == (0, 3)
    assert summary.skipped == 3  # robot-01's two logs and the quarantined one: indexed
    assert {e.id for e in list_episodes(store_settings)}.isdisjoint(gone)
    assert set(frames_by_episode(store_settings)) == home.of_robot("robot-01")
    with session_scope(store_settings.db_url) as session:
        assert session.get(IngestRun, summary.run_id).tombstoned == 3


def test_a_deleted_quarantined_upload_does_not_come_back_when_retried(store_settings, tmp_path):
    home = seed(store_settings, tmp_path / "logs", train=False)
    [quarantined] = home.quarantined
    delete_episodes(store_settings, ids=[quarantined], reason="operator's face", actor="fatima")
    bad = home.logs / "bad" / "truncated.mcap"

    same = ingest_logs(store_settings, source=str(home.logs))  # retried as it was
    bad.unlink()
    write_episode_mcap(recording(n=33, robot_id="robot-09"), bad)  # fixed and sent again
    fixed = ingest_logs(store_settings, source=str(home.logs))

    assert (same.tombstoned, same.quarantined, same.ingested) == (1, 0, 0)
    assert (fixed.tombstoned, fixed.quarantined, fixed.ingested) == (1, 0, 0)
    assert all(e.robot_id != "robot-09" for e in list_episodes(store_settings))


def test_one_deleted_episode_of_a_container_stays_out_and_the_rest_stay_in(
    store_settings, tmp_path
):
    logs = tmp_path / "logs"
    write_lerobot(
        logs / "lab", episodes=((9, None), (7, None), (5, None)), state_dim=4, action_dim=2
    )
    first = ingest_logs(store_settings, source=str(logs))
    assert first.ingested == 3
    victim = first.episode_ids[1]
    delete_episodes(store_settings, ids=[victim], reason="asked", actor="fatima")

    again = ingest_logs(store_settings, source=str(logs))

    assert (again.ingested, again.skipped, again.tombstoned) == (0, 2, 1)
    assert set(frames_by_episode(store_settings)) == set(first.episode_ids) - {victim}
