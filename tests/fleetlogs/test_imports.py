"""Demonstrations imported from robomimic HDF5 and LeRobot v3.0, and the store exported back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest

from services.fleetlogs.episode_store import EpisodeStore
from services.fleetlogs.export import export_lerobot
from services.fleetlogs.ingest import ingest_logs, list_episodes
from services.fleetlogs.lerobot_import import read_lerobot
from services.fleetlogs.mapping import Robomimic
from services.fleetlogs.mcap_reader import LogFormatError
from services.fleetlogs.mcap_writer import write_episode_mcap
from services.fleetlogs.robomimic import read_robomimic
from tests.fleetlogs.datasets import write_lerobot, write_robomimic
from tests.fleetlogs.logs import recording

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def test_robomimic_demos_become_demonstrations(tmp_path):
    path = write_robomimic(tmp_path / "lift.hdf5", lengths=(12, 9, 5))
    with h5py.File(path, "a") as f:  # demo_10 sorts after demo_2, as a number
        f.copy("data/demo_0", "data/demo_10")
    read = list(read_robomimic(path, Robomimic(), {"robot_id": "panda-3"}, WHEN))
    assert [name for name, _ in read] == ["demo_0", "demo_1", "demo_2", "demo_10"]
    raw = read[0][1]
    assert (raw.task, raw.robot_id, raw.kind, raw.policy_version, raw.outcome) == (
        "Lift",
        "panda-3",
        "demo",
        None,
        "success",
    )
    assert raw.states.shape == (12, 5) and raw.actions.shape == (12, 7)  # the image left out
    assert read[1][1].outcome == "unknown" and raw.started_at == WHEN
    np.testing.assert_allclose(raw.timestamps, np.arange(12) / 20)
    assert set(raw.control_source) == {"operator"} and raw.interventions == []
    with h5py.File(path) as f:
        np.testing.assert_allclose(raw.states[:, :3], f["data/demo_0/obs/robot0_eef_pos"][()])

    only = Robomimic(obs_keys=("robot0_gripper_qpos",), control_hz=10)
    assert next(read_robomimic(path, only, {}, WHEN))[1].states.shape == (12, 2)


def test_broken_robomimic_files_and_demos_say_why(tmp_path):
    def no_actions(group):
        del group["actions"]

    def short_obs(group):
        del group["obs/robot0_eef_pos"]
        group.create_dataset("obs/robot0_eef_pos", data=np.zeros((3, 3)))

    path = write_robomimic(
        tmp_path / "x.hdf5", lengths=(6, 6, 6), broken={"demo_1": no_actions, "demo_2": short_obs}
    )
    results = dict(read_robomimic(path, Robomimic(), {}, WHEN))
    assert results["demo_0"].steps == 6
    assert str(results["demo_1"]) == "demo_1: no actions"
    assert "obs robot0_eef_pos and actions differ in length" in str(results["demo_2"])

    for name, content, reason in (
        ("empty.hdf5", b"", "empty file"),
        ("text.hdf5", b"not a robot log at all", "not an HDF5 file"),
        ("cut.hdf5", path.read_bytes()[:3000], "truncated or corrupt HDF5"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LogFormatError, match=reason):
            list(read_robomimic(tmp_path / name, Robomimic(), {}, WHEN))
    with h5py.File(tmp_path / "nodemos.hdf5", "w") as f:
        f.create_group("data")
    with pytest.raises(LogFormatError, match="zero-length file: no data/demo_N groups"):
        list(read_robomimic(tmp_path / "nodemos.hdf5", Robomimic(), {}, WHEN))


def test_a_lerobot_dataset_imports_and_keeps_its_interventions(tmp_path):
    root = write_lerobot(tmp_path / "towels")
    [(name0, demo), (name1, helped)] = list(read_lerobot(root, {}, WHEN))
    assert (name0, demo.kind, demo.task, demo.robot_id, demo.steps) == (
        "episode_0",
        "demo",
        "fold towel",
        "so100",
        10,
    )
    assert set(demo.control_source) == {"operator"} and demo.outcome == "unknown"
    assert (name1, helped.kind, helped.task, helped.control_hz) == (
        "episode_1",
        "deployment",
        "open drawer",
        30.0,
    )
    assert [(s.start_step, s.end_step) for s in helped.interventions] == [(3, 5)]
    np.testing.assert_allclose(demo.timestamps, np.arange(10) / 30, rtol=1e-6)

    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(LogFormatError, match="LeRobot dataset v2.1: Flywheel reads v3.0"):
        list(read_lerobot(root, {}, WHEN))


def test_imported_demos_are_ingested_once_and_export_as_a_dataset_that_imports_back(
    settings, tmp_path
):
    logs = tmp_path / "logs"
    write_robomimic(logs / "demos/lift.hdf5", lengths=(12, 9))
    write_episode_mcap(recording(n=15, state_dim=5, action_dim=7), logs / "fleet/e1.mcap")
    mapping_dims = ingest_logs(settings, source=str(logs))
    assert (mapping_dims.ingested, mapping_dims.quarantined) == (3, 0)
    rows = {e.source_uri.rsplit("/", 1)[-1]: e for e in list_episodes(settings)}
    assert set(rows) == {"lift.hdf5#demo_0", "lift.hdf5#demo_1", "e1.mcap"}
    assert rows["lift.hdf5#demo_0"].source_format == "robomimic"
    assert (rows["lift.hdf5#demo_0"].kind, rows["lift.hdf5#demo_0"].outcome) == ("demo", "success")

    # a re-run decodes the demos again but adds nothing; a new demo in the file adds itself
    assert ingest_logs(settings, source=str(logs)).ingested == 0
    write_robomimic(logs / "demos/lift.hdf5", lengths=(12, 9, 4))
    again = ingest_logs(settings, source=str(logs))
    assert (again.ingested, len(list_episodes(settings))) == (1, 4)

    exported = export_lerobot(settings, tmp_path / "export")
    assert (exported.episodes, exported.frames) == (4, 12 + 9 + 4 + 15)
    info = json.loads((tmp_path / "export/meta/info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"]) == (
        "v3.0",
        4,
        40,
    )
    back = dict(read_lerobot(tmp_path / "export", {}, WHEN))
    store = EpisodeStore(settings.episode_store)
    originals = store.read_frames([e.id for e in list_episodes(settings)])
    fleet = next(e for e in back.values() if e.kind == "deployment")
    assert (fleet.steps, fleet.task, fleet.robot_id, fleet.policy_version) == (
        15,
        "toy-reach",
        "robot-00",
        "3",
    )
    assert fleet.outcome == "success" and [
        (s.start_step, s.end_step) for s in fleet.interventions
    ] == [(5, 9)]
    assert sum(e.steps for e in back.values()) == len(originals)

    demos_only = export_lerobot(settings, tmp_path / "demos", kinds=["demo"])
    assert demos_only.episodes == 3
    with pytest.raises(FileExistsError):
        export_lerobot(settings, tmp_path / "demos")
    with pytest.raises(LookupError, match="no ingested episodes match"):
        export_lerobot(settings, tmp_path / "none", tasks=["juggle"])
    assert not (tmp_path / "none").exists()
