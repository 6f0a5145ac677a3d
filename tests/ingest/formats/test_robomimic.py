"""Demonstrations imported from robomimic HDF5 files."""

from __future__ import annotations

from datetime import UTC, datetime

import h5py
import numpy as np
import pytest

from services.episodes.model import LogFormatError
from services.ingest.formats.robomimic import read_robomimic
from services.ingest.mapping import Robomimic
from tests.ingest.datasets import write_robomimic

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
