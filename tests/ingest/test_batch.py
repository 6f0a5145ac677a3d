"""Ingest: good uploads become indexed episodes, every kind of bad one is quarantined."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, text

from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest import batch
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.store import session_scope
from services.store.db import engine_for
from services.store.models import Episode, IngestRun, Intervention
from tests.ingest.datasets import write_lerobot, write_robomimic
from tests.ingest.logs import recording, write_bad_logs
from tests.ingest.ros_logs import (
    FLOAT_ARRAY,
    INT32,
    STRING,
    T0,
    Msg,
    episode_messages,
    write_ros1_bag,
    write_ros2_bag,
    write_ros2_mcap,
)

__all__ = ["recording"]  # other packages' tests build their logs with it


@pytest.fixture
def fleet_dir(tmp_path) -> Path:
    logs = tmp_path / "logs"
    write_episode_mcap(recording(), logs / "robot-00" / "good-1.mcap")
    write_episode_mcap(recording(n=30, task="toy-push"), logs / "robot-00" / "good-2.mcap")
    good = (logs / "robot-00" / "good-1.mcap").read_bytes()
    (logs / ".good-3.mcap.partial").write_bytes(good[:100])  # an upload still in flight
    (logs / ".in-flight.mcap").write_bytes(good[:100])
    return logs


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_each_bad_file_is_quarantined_with_its_reason_and_the_good_ones_ingested(
    store_settings, fleet_dir
):
    expected = write_bad_logs(fleet_dir / "bad", (fleet_dir / "robot-00/good-1.mcap").read_bytes())
    before = snapshot(fleet_dir)
    summary = ingest_logs(store_settings, source=str(fleet_dir))

    assert (summary.ingested, summary.quarantined) == (2, len(expected))
    reasons = {Path(uri).name: reason for uri, reason in summary.quarantined_files}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    quarantined = list_episodes(store_settings, status="quarantined")
    assert {Path(e.source_uri).name: e.reason for e in quarantined} == reasons
    nan = next(e for e in quarantined if e.source_uri.endswith("nan.mcap"))
    assert (nan.robot_id, nan.episode_index, nan.data_file) == ("robot-09", None, None)
    assert before == snapshot(fleet_dir)  # sources untouched, uploads in flight ignored

    again = ingest_logs(store_settings, source=str(fleet_dir))
    assert (again.ingested, again.quarantined, again.skipped) == (0, 0, 2 + len(expected))
    assert len(list_episodes(store_settings)) == 2 + len(expected)
    with session_scope(store_settings.db_url) as session:
        run = session.get(IngestRun, summary.run_id)
        assert (run.ingested, run.quarantined, run.finished_at is not None) == (
            2,
            len(expected),
            True,
        )
        # the suite's results are kept with the run: which expectations failed, how often
        [result] = run.validation
        [suite] = result["suites"]
        failed = {e["kwargs"].get("column") for e in suite["expectations"] if not e["success"]}
        assert not result["success"] and "state_nonfinite_steps" in failed
        assert suite["embodiment"] == "inferred"


def test_a_changed_file_is_tried_again(settings, tmp_path):
    logs = tmp_path / "logs"
    (logs / "a.mcap").parent.mkdir(parents=True)
    (logs / "a.mcap").write_bytes(b"")
    assert ingest_logs(settings, source=f"file://{logs}").quarantined == 1
    write_episode_mcap(recording(), logs / "a.mcap")  # the robot uploads it again, complete
    summary = ingest_logs(settings, source=f"file://{logs}")
    assert (summary.ingested, summary.skipped) == (1, 0)


def test_episodes_are_indexed_with_interventions_and_stored_in_the_lerobot_layout(
    settings, fleet_dir
):
    summary = ingest_logs(settings, source=str(fleet_dir))
    with session_scope(settings.db_url) as session:
        episodes = session.scalars(select(Episode).order_by(Episode.episode_index)).all()
        assert [(e.steps, e.episode_index, e.task) for e in episodes] == [
            (20, 0, "toy-reach"),
            (30, 1, "toy-push"),
        ]
        assert all(e.data_file == "data/chunk-000/file-000.parquet" for e in episodes)
        assert [(e.outcome, e.n_interventions, e.duration_s) for e in episodes] == [
            ("success", 1, 2.0),
            ("success", 1, 3.0),
        ]
        interventions = session.scalars(select(Intervention).order_by(Intervention.id)).all()
        assert sorted(
            (i.id, i.start_step, i.end_step, i.kind, i.operator_id) for i in interventions
        ) == sorted((f"{e.id}-0", 5, 9, "correction", "op-7") for e in episodes)
        assert {i.reason for i in interventions} == {"no progress for 15 steps"}

    root = settings.episode_store
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"]) == (
        "v3.0",
        2,
        50,
    )
    assert info["fps"] == 10.0 and info["total_tasks"] == 2
    assert info["features"]["observation.state"] == {
        "dtype": "float32",
        "shape": [4],
        "names": None,
    }
    assert info["features"]["action"]["shape"] == [2]
    for name in (
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "intervention",
        "policy_version",
        "robot_id",
        "control_source",
        "episode_id",
    ):
        assert name in info["features"], name
    assert pq.read_table(root / "meta/tasks.parquet").to_pylist() == [
        {"task_index": 0, "task": "toy-push"},
        {"task_index": 1, "task": "toy-reach"},
    ]
    meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(m["episode_index"], m["length"], m["tasks"]) for m in meta] == [
        (0, 20, ["toy-reach"]),
        (1, 30, ["toy-push"]),
    ]
    assert [(m["dataset_from_index"], m["dataset_to_index"]) for m in meta] == [(0, 20), (20, 50)]
    assert meta[0]["data/chunk_index"] == 0 and meta[0]["data/file_index"] == 0
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [50] and len(stats["observation.state"]["mean"]) == 4

    store = EpisodeStore(root)
    for data_files in ({e.id: e.data_file for e in episodes}, None):
        frames = store.read_frames(summary.episode_ids, data_files=data_files)
        assert len(frames) == 50 and frames["intervention"].sum() == 8
        assert set(frames["task"]) == {"toy-reach", "toy-push"}
        assert len(frames["observation.state"].iloc[0]) == 4
    only = store.read_frames([episodes[1].id])
    assert len(only) == 30 and set(only["robot_id"]) == {"robot-00"}


def test_large_backlogs_go_in_chunks_of_one_data_file_each(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "CHUNK_EPISODES", 2)
    logs = tmp_path / "logs"
    for i in range(5):
        write_episode_mcap(recording(n=10 + i), logs / f"e{i}.mcap")
    assert ingest_logs(settings, source=str(logs)).ingested == 5
    store = EpisodeStore(settings.episode_store)
    assert len(store.data_files()) == 3
    frames = store.read_frames([e.id for e in list_episodes(settings)])
    assert sorted(frames["index"]) == list(range(10 + 11 + 12 + 13 + 14))
    assert sorted(set(frames["episode_index"])) == [0, 1, 2, 3, 4]
    assert json.loads((store.root / "meta/stats.json").read_text())["action"]["count"] == [60]


def test_a_failed_index_write_leaves_no_orphan_parquet(settings, fleet_dir):
    with engine_for(settings.db_url).begin() as conn:  # the database refuses the write
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON interventions "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    with pytest.raises(Exception, match="disk full"):
        ingest_logs(settings, source=str(fleet_dir))
    store = EpisodeStore(settings.episode_store)
    assert store.data_files() == set() and store.orphan_files(set()) == set()
    assert list_episodes(settings) == []

    with engine_for(settings.db_url).begin() as conn:
        conn.execute(text("DROP TRIGGER refuse"))
    assert ingest_logs(settings, source=str(fleet_dir)).ingested == 2
    assert store.data_files() == {"data/chunk-000/file-000.parquet"}


def test_a_crash_leftover_data_file_is_removed_on_the_next_run(settings, fleet_dir):
    ingest_logs(settings, source=str(fleet_dir))
    store = EpisodeStore(settings.episode_store)
    data = store.root / "data/chunk-000"
    (data / "file-007.parquet").write_bytes((data / "file-000.parquet").read_bytes())
    (data / ".file-008.parquet.partial").write_bytes(b"half")
    assert store.orphan_files({"data/chunk-000/file-000.parquet"}) == {
        "data/chunk-000/file-007.parquet"
    }
    ingest_logs(settings, source=str(fleet_dir))
    assert sorted(p.name for p in data.iterdir()) == ["file-000.parquet"]
    assert json.loads((store.root / "meta/info.json").read_text())["total_frames"] == 50


def write_mixed_fleet(logs: Path, tmp: Path) -> dict[str, str]:
    """Good logs in every format (state 4, action 2) and bad ones; name -> reason fragment."""
    messages = episode_messages()
    good = write_ros1_bag(messages, logs / "ros1/good.bag").read_bytes()
    write_ros2_bag(episode_messages(steps=12), logs / "ros2/good")
    write_ros2_mcap(episode_messages(steps=14), logs / "ros2/good.mcap")
    write_robomimic(logs / "demos/good.hdf5", lengths=(8,), state=(2, 2), action_dim=2)
    write_lerobot(logs / "lerobot/good", episodes=((9, None),), state_dim=4, action_dim=2)
    bad = logs / "bad"
    bad.mkdir(parents=True)
    (bad / "empty.bag").write_bytes(b"")
    (bad / "not-a-log.bag").write_text("this is a shopping list, not a robot log\n")
    (bad / "truncated.bag").write_bytes(good[: len(good) // 2])
    (bad / "not-a-log.hdf5").write_text("a to-do list, not demonstrations\n")
    (bad / "truncated.hdf5").write_bytes(
        write_robomimic(tmp / "cut.hdf5", lengths=(30,), state=(2, 2), action_dim=2).read_bytes()[
            :5000
        ]
    )
    unknown = [Msg("/camera/info", STRING, T0, "x"), Msg("/tf", INT32, T0 + 1, 1)]
    write_ros2_mcap(unknown, bad / "unknown-topics.mcap")
    write_ros2_mcap(episode_messages(steps=3, info=None), bad / "no-robot.mcap")
    nan = episode_messages(steps=6)
    i = next(i for i, m in enumerate(nan) if m.topic == "/flywheel/action" and m.t_ns > T0)
    nan[i] = Msg(nan[i].topic, nan[i].msgtype, nan[i].t_ns, [float("nan"), float("inf")])
    write_ros2_mcap(nan, bad / "nan.mcap")
    absurd = episode_messages(steps=4, outcome=None)
    absurd.append(Msg("/flywheel/action", FLOAT_ARRAY, T0 + 10**17, [0.0, 0.0]))
    write_ros1_bag(absurd, bad / "absurd-time.bag")
    write_ros1_bag(episode_messages(steps=5, action_dim=3), bad / "wrong-action-size.bag")
    write_ros2_bag(episode_messages(steps=1), bad / "one-step")
    broken = write_ros2_bag(episode_messages(), bad / "damaged-db")
    db = next(broken.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:4096])
    old = write_lerobot(bad / "old-lerobot", episodes=((5, None),))
    (old / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    return {
        "empty.bag": "seems to be empty",
        "not-a-log.bag": "File magic is invalid",
        "truncated.bag": "unreadable bag",
        "truncated.hdf5": "truncated or corrupt HDF5",
        "not-a-log.hdf5": "not an HDF5 file (bad magic bytes)",
        "unknown-topics.mcap": "no messages on the mapped state topic /joint_states (the log "
        "has /camera/info, /tf)",
        "no-robot.mcap": "does not say its robot_id and task",
        "nan.mcap": "action has NaN/inf at step 1",
        "absurd-time.bag": "absurd timestamp",
        "wrong-action-size.bag": "action has 3 values, expected 2 for task bin-pick",
        "one-step": "too short: 1 steps, fewer than 2",
        "damaged-db": "database disk image is malformed",
        "old-lerobot": "LeRobot dataset v2.1: Flywheel reads v3.0",
    }


def test_every_format_in_one_batch_good_ones_in_and_each_bad_one_quarantined(settings, tmp_path):
    logs = tmp_path / "logs"
    expected = write_mixed_fleet(logs, tmp_path)
    before = snapshot(logs)
    summary = ingest_logs(settings, source=str(logs))

    reasons = {Path(uri.split("#")[0]).name: reason for uri, reason in summary.quarantined_files}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    formats = Counter(e.source_format for e in list_episodes(settings, status="ok"))
    assert formats == {"rosbag1": 1, "rosbag2": 1, "mcap": 1, "robomimic": 1, "lerobot": 1}
    assert summary.ingested == 5
    assert before == snapshot(logs)  # sqlite bags opened read-only, nothing written beside them
    again = ingest_logs(settings, source=str(logs))
    assert (again.ingested, again.quarantined) == (0, 0)
    assert len(list_episodes(settings)) == 5 + len(expected)
