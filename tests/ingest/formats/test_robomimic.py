"""Demonstrations imported from robomimic HDF5 files."""

from __future__ import annotations

from datetime import UTC, datetime

import h5py
import numpy as np
import pytest

from services.episodes.model import LogFormatError
from services.ingest.formats.robomimic import read_robomimic
from services.ingest.mapping import Robomimic, parse_mapping
from tests.ingest.datasets import assert_frames, write_robomimic

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def test_robomimic_demos_become_demonstrations(tmp_path):
    path = write_robomimic(tmp_path / "lift.hdf5", lengths=(12, 9, 5), images=("agentview_image",))
    with h5py.File(path, "a") as f:  # demo_10 sorts after demo_2, as a number
        f.copy("data/demo_0", "data/demo_10")
    read = list(read_robomimic(path, Robomimic(), {"robot_id": "panda-3"}, WHEN, tmp_path))
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


def test_robomimic_image_observations_become_cameras(tmp_path):
    images = ("agentview_image", "robot0_eye_in_hand_image")
    path = write_robomimic(tmp_path / "lift.hdf5", lengths=(6, 5), images=images)
    spool = tmp_path / "spool"
    spool.mkdir()
    read = dict(read_robomimic(path, Robomimic(), {}, WHEN, directory=spool))
    for n, name in enumerate(("demo_0", "demo_1")):
        raw = read[name]
        assert raw.states.shape == (raw.steps, 5)  # the images are no part of the state
        assert list(raw.cameras) == ["agentview", "robot0_eye_in_hand"]
        for c, track in enumerate(raw.cameras.values()):
            assert track.path.parent == spool and track.facts.frames == raw.steps
            assert_frames(track, c, n, raw.steps)
    assert len(list(spool.iterdir())) == 4

    only = Robomimic(image_keys=("robot0_eye_in_hand_image",))
    assert list(next(read_robomimic(path, only, {}, WHEN, directory=spool))[1].cameras) == [
        "robot0_eye_in_hand"
    ]
    assert next(read_robomimic(path, Robomimic(image_keys=()), {}, WHEN))[1].cameras == {}
    mapping = parse_mapping({"robomimic": {"image_keys": ["agentview_image"]}})
    assert mapping.robomimic.image_keys == ("agentview_image",)
    with pytest.raises(ValueError, match="camera name 'front-left'"):
        parse_mapping({"robomimic": {"image_keys": ["front-left_image"]}})
    with pytest.raises(ValueError, match="image_keys must be a list of keys, not 'agentview'"):
        parse_mapping({"robomimic": {"image_keys": "agentview"}})


def test_broken_image_observations_fail_their_demo_and_name_the_camera(tmp_path):
    def short_images(group):
        del group["obs/robot0_eye_in_hand_image"]
        group.create_dataset("obs/robot0_eye_in_hand_image", data=np.zeros((2, 8, 8, 3), np.uint8))

    def float_images(group):
        del group["obs/agentview_image"]
        group.create_dataset("obs/agentview_image", data=np.zeros((6, 8, 8, 3), np.float32))

    def no_images(group):
        del group["obs/agentview_image"]

    path = write_robomimic(
        tmp_path / "x.hdf5",
        lengths=(6, 6, 6, 6),
        images=("agentview_image", "robot0_eye_in_hand_image"),
        broken={"demo_1": short_images, "demo_2": float_images, "demo_3": no_images},
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    named = Robomimic(image_keys=("agentview_image", "robot0_eye_in_hand_image"))
    results = dict(read_robomimic(path, named, {}, WHEN, directory=spool))
    assert set(results["demo_0"].cameras) == {"agentview", "robot0_eye_in_hand"}
    assert str(results["demo_1"]) == (
        "demo_1: camera robot0_eye_in_hand: obs robot0_eye_in_hand_image has 2 frames for 6 steps"
    )
    assert str(results["demo_2"]) == (
        "demo_2: camera agentview: obs agentview_image is (6, 8, 8, 3) float32, not "
        "(T, H, W, 3) uint8 frames"
    )
    assert str(results["demo_3"]) == "demo_3: camera agentview: obs has no agentview_image"
    # The failed demos left no tracks behind (demo_1's agentview was encoded first).
    assert sorted(p.name.split("-")[0] for p in spool.iterdir()) == [
        "agentview",
        "robot0_eye_in_hand",
    ]
