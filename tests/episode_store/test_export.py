"""The episode store exported as a LeRobot v3.0 dataset, and imported back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from services.episode_store.export import export_lerobot
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.batch import ingest_logs
from services.ingest.formats.lerobot import read_lerobot
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.ingest.mapping import parse_mapping
from services.validation.embodiment import robot_type
from tests.episode_store.camera_layout import add_camera
from tests.ingest.datasets import write_lerobot, write_robomimic
from tests.ingest.logs import recording
from tests.ingest.ros_logs import INFO, T0, episode_messages, write_ros2_bag

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


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

    # the demos (20 Hz) and the fleet's log (10 Hz) cannot share one dataset's fps
    with pytest.raises(ValueError, match=r"2 rates \(10 Hz: 1 episode, 20 Hz: 3 episodes\)"):
        export_lerobot(settings, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()

    exported = export_lerobot(settings, tmp_path / "export", kinds=["deployment"])
    assert (exported.episodes, exported.frames) == (1, 15)
    info = json.loads((tmp_path / "export/meta/info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"]) == (
        "v3.0",
        1,
        15,
    )
    [fleet] = dict(read_lerobot(tmp_path / "export", {}, WHEN)).values()
    assert (fleet.steps, fleet.task, fleet.robot_id, fleet.policy_version) == (
        15,
        "toy-reach",
        "robot-00",
        "3",
    )
    assert fleet.outcome == "success" and [
        (s.start_step, s.end_step) for s in fleet.interventions
    ] == [(5, 9)]

    demos_only = export_lerobot(settings, tmp_path / "demos", kinds=["demo"])
    assert demos_only.episodes == 3
    demos = dict(read_lerobot(tmp_path / "demos", {}, WHEN)).values()
    assert sorted(e.steps for e in demos) == [4, 9, 12] and {e.kind for e in demos} == {"demo"}
    originals = EpisodeStore(settings.episode_store).read_frames(
        [e.id for e in list_episodes(settings)]
    )
    assert sum(e.steps for e in demos) + fleet.steps == len(originals)
    with pytest.raises(FileExistsError):
        export_lerobot(settings, tmp_path / "demos")
    with pytest.raises(LookupError, match="no ingested episodes match"):
        export_lerobot(settings, tmp_path / "none", tasks=["juggle"])
    assert not (tmp_path / "none").exists()


# -- strict LeRobot v3.0 ----------------------------------------------------------------------

CAMERA = "observation.images.front"
MAPPING = {"embodiments": [{"name": "ur5e", "robots": ["arm-*"], "state_dim": 4, "action_dim": 2}]}


def _fleet_store(settings, tmp_path, second_task: str = INFO["task"]) -> None:
    """A store of two ROS 2 bags (JointState states, 20 and 25 steps) of one embodiment, in
    one data file."""
    logs = tmp_path / "logs"
    write_ros2_bag(episode_messages(steps=20), logs / "bags/one")
    second = episode_messages(steps=25, start_ns=T0 + 10**11, info={**INFO, "task": second_task})
    write_ros2_bag(second, logs / "bags/two")
    summary = ingest_logs(settings, source=str(logs), mapping=parse_mapping(MAPPING))
    assert (summary.ingested, summary.quarantined) == (2, 0)


def _export(settings, destination, **options):
    fleet = parse_mapping(MAPPING)
    return export_lerobot(
        settings,
        destination,
        robot_type=partial(robot_type, fleet.embodiments),
        code_version="abc123",
        **options,
    )


def test_the_export_is_strict_lerobot_v3(settings, tmp_path):
    _fleet_store(settings, tmp_path)
    out = tmp_path / "export"
    summary = _export(settings, out, license="cc-by-4.0")
    assert (summary.episodes, summary.frames, summary.data_files) == (2, 45, 1)
    info = json.loads((out / "meta/info.json").read_text())

    # tasks.parquet as LeRobot reads it: pandas, the task the index
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert tasks.index.name == "task" and list(tasks.columns) == ["task_index"]
    assert tasks.loc["bin-pick", "task_index"] == 0

    # meta/episodes: where each episode's data and metadata lie, and its index range
    [episodes_file] = sorted((out / "meta/episodes").rglob("*.parquet"))
    assert episodes_file.relative_to(out).as_posix() == "meta/episodes/chunk-000/file-000.parquet"
    episodes = pq.read_table(episodes_file).to_pylist()
    for column in ("meta/episodes/chunk_index", "meta/episodes/file_index", "data/chunk_index"):
        assert [e[column] for e in episodes] == [0, 0]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [
        (0, 20),
        (20, 45),
    ]
    assert [e["tasks"] for e in episodes] == [["bin-pick"], ["bin-pick"]]

    # info.json: LeRobot's size limits, the embodiment, the log's names
    assert (info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (100, 500)
    assert info["chunks_size"] == 1000 and info["fps"] == 10 and isinstance(info["fps"], int)
    assert (info["robot_type"], info["video_path"], info["splits"]) == (
        "ur5e",
        None,
        {"train": "0:2"},
    )
    features = info["features"]
    assert features["observation.state"]["names"] == [f"joint{i}.position" for i in range(4)]
    assert features["action"]["names"] == ["data.0", "data.1"]
    assert features["observation.state"]["shape"] == [4]
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert (
            features[name]["shape"] == [1]
            and name
            in pq.read_schema(out / info["data_path"].format(chunk_index=0, file_index=0)).names
        )

    # stats.json: every numeric feature, each stat of its shape, matching the data
    stats = json.loads((out / "meta/stats.json").read_text())
    numeric = {k for k, v in features.items() if v["dtype"] not in ("string", "video")}
    assert set(stats) == numeric
    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pandas()
    for feature in numeric:
        values = np.stack(data[feature].to_numpy()).reshape(len(data), -1).astype(float)
        np.testing.assert_allclose(stats[feature]["mean"], values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[feature]["min"], values.min(0))
        np.testing.assert_allclose(stats[feature]["max"], values.max(0))
        assert stats[feature]["count"] == [45]
    assert (stats["index"]["min"], stats["index"]["max"]) == ([0], [44])

    # the dataset card: where the data came from
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-4.0" and "ur5e" in front["tags"]
    assert front["configs"][0]["data_files"] == "data/*/*.parquet"
    for fact in ("abc123", "arm-01 (2)", "bin-pick (2)", "2026-01-01 to 2026-01-01", "frames: 45"):
        assert fact in card, fact
    assert f"| rosbag2 | `{tmp_path / 'logs/bags'}` | 2 |" in card

    # and Flywheel's importer reads it back, names included
    back = dict(read_lerobot(out, {}, WHEN)).values()
    assert sorted(e.steps for e in back) == [20, 25]
    assert {e.state_names for e in back} == {tuple(features["observation.state"]["names"])}


def test_an_export_packs_data_files_up_to_the_size_limit(settings, tmp_path):
    _fleet_store(settings, tmp_path)
    out = tmp_path / "small"
    # 20 steps of 4 + 2 floats take about 2 KB at the export's estimate: one episode a file
    summary = _export(settings, out, data_file_mb=0.003)
    assert summary.data_files == 2
    episodes = pd.concat(
        pd.read_parquet(p) for p in sorted((out / "meta/episodes").rglob("*.parquet"))
    )
    assert episodes["data/file_index"].tolist() == [0, 1]
    assert episodes["meta/episodes/file_index"].tolist() == [0, 1]
    assert episodes["dataset_from_index"].tolist() == [0, 20]
    assert sorted(e.steps for _, e in read_lerobot(out, {}, WHEN)) == [20, 25]


def test_an_export_without_a_declared_embodiment_has_no_robot_type(settings, tmp_path):
    write_episode_mcap(recording(n=15), tmp_path / "logs/e1.mcap")
    ingest_logs(settings, source=str(tmp_path / "logs"))
    export_lerobot(settings, tmp_path / "export")
    info = json.loads((tmp_path / "export/meta/info.json").read_text())
    assert info["robot_type"] is None
    assert info["features"]["observation.state"]["names"] is None  # the MCAP names none
    card = (tmp_path / "export/README.md").read_text()
    assert "license: other" in card and "Robot type (embodiment): not declared" in card


def test_an_export_carries_the_stores_cameras(settings, tmp_path):
    _fleet_store(settings, tmp_path)
    add_camera(settings.episode_store, CAMERA)
    out = tmp_path / "export"
    assert _export(settings, out).video_files == 1

    info = json.loads((out / "meta/info.json").read_text())
    assert (
        info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    assert info["features"][CAMERA]["dtype"] == "video"
    assert info["features"][CAMERA]["names"] == ["height", "width", "channels"]
    video = out / info["video_path"].format(video_key=CAMERA, chunk_index=0, file_index=0)
    assert (
        video.read_bytes()
        == next(settings.episode_store.glob(f"videos/{CAMERA}/*/*.mp4")).read_bytes()
    )
    episodes = pq.read_table(next((out / "meta/episodes").rglob("*.parquet"))).to_pylist()
    assert [
        (e[f"videos/{CAMERA}/from_timestamp"], e[f"videos/{CAMERA}/to_timestamp"]) for e in episodes
    ] == [
        (0.0, 2.0),
        (2.0, 4.5),
    ]
    assert [e[f"videos/{CAMERA}/file_index"] for e in episodes] == [0, 0]
    stats = json.loads((out / "meta/stats.json").read_text())[CAMERA]
    assert np.shape(stats["mean"]) == (3, 1, 1) and stats["count"] == [45]
    # the two episodes' shades pooled by their lengths
    np.testing.assert_allclose(np.ravel(stats["mean"]), (20 * 40 + 25 * 100) / 45 / 255)
    np.testing.assert_allclose(np.ravel(stats["max"]), 100 / 255)

    # an episode whose video is gone is refused, and nothing is left at the destination
    video_of_store = next(settings.episode_store.glob(f"videos/{CAMERA}/*/*.mp4"))
    video_of_store.unlink()
    with pytest.raises(LookupError, match=f"{CAMERA} video .* is missing"):
        _export(settings, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_an_export_of_some_episodes_cuts_their_frames_out_of_a_shared_video(settings, tmp_path):
    _fleet_store(settings, tmp_path, second_task="bin-place")
    add_camera(settings.episode_store, CAMERA)
    out = tmp_path / "export"
    assert _export(settings, out, tasks=["bin-place"]).episodes == 1

    [row] = pq.read_table(next((out / "meta/episodes").rglob("*.parquet"))).to_pylist()
    span = (row[f"videos/{CAMERA}/from_timestamp"], row[f"videos/{CAMERA}/to_timestamp"])
    assert span == (0.0, 2.5)
    with av.open(str(next(out.glob(f"videos/{CAMERA}/*/*.mp4")))) as video:
        shades = [frame.to_ndarray(format="rgb24").mean() for frame in video.decode(video=0)]
    # the second episode's 25 frames (shade 100), none of the first's (shade 40)
    assert len(shades) == 25 and all(abs(s - 100) < 8 for s in shades)


def _ingested_cameras(settings, tmp_path) -> None:
    """A store of a LeRobot dataset's 4 episodes (8, 6, 7, 5 steps at 30 Hz; two tasks,
    alternating) and its two cameras, ingested by the real reader into the store's videos."""
    write_lerobot(tmp_path / "logs/ds", LEROBOT_EPISODES, 6, 6, cameras=("front", "wrist"))
    summary = ingest_logs(settings, source=str(tmp_path / "logs"))
    assert (summary.ingested, summary.quarantined) == (4, 0)


LEROBOT_EPISODES = ((8, None), (6, [2, 3]), (7, None), (5, None))


def test_an_ingested_dataset_with_cameras_exports_whole_and_in_part(settings, tmp_path):
    _ingested_cameras(settings, tmp_path)
    store = EpisodeStore(settings.episode_store)
    whole = _export(settings, tmp_path / "whole")
    assert (whole.episodes, whole.frames, whole.video_files) == (4, 26, 2)
    for camera in ("observation.images.front", "observation.images.wrist"):
        [stored] = sorted(store.root.glob(f"videos/{camera}/*/*.mp4"))
        [exported] = sorted((tmp_path / "whole").glob(f"videos/{camera}/*/*.mp4"))
        assert exported.read_bytes() == stored.read_bytes()  # all its episodes: copied whole
    info = json.loads((tmp_path / "whole/meta/info.json").read_text())
    assert info["features"]["observation.images.wrist"]["dtype"] == "video"
    stats = json.loads((tmp_path / "whole/meta/stats.json").read_text())
    assert np.shape(stats["observation.images.front"]["mean"]) == (3, 1, 1)

    part = _export(settings, tmp_path / "part", tasks=["fold towel"])
    assert (part.episodes, part.frames) == (2, 15)
    rows = pq.read_table(next((tmp_path / "part/meta/episodes").rglob("*.parquet"))).to_pylist()
    front = "videos/observation.images.front"
    assert [(r[f"{front}/from_timestamp"], r[f"{front}/to_timestamp"]) for r in rows] == [
        pytest.approx((0.0, 8 / 30)),
        pytest.approx((8 / 30, 15 / 30)),
    ]
    with av.open(str(next((tmp_path / "part").glob(f"{front}/*/*.mp4")))) as video:
        assert sum(1 for _ in video.decode(video=0)) == 15  # the other task's frames cut out
    back = dict(read_lerobot(tmp_path / "part", {}, WHEN)).values()
    assert sorted(e.steps for e in back) == [7, 8]


# -- read back by an independent LeRobot v3.0 tool ------------------------------------------

DOCTOR = Path(__file__).parents[2] / ".venv-tools/lerobot-doctor"
DOCTOR_VERSION = "0.2.0"


@pytest.fixture(scope="session")
def lerobot_doctor() -> Path:
    """lerobot-doctor in a virtual environment of its own (``make tools`` builds it)."""
    exe = DOCTOR / "bin/lerobot-doctor"
    if not exe.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(DOCTOR)], check=True, timeout=300)
            pip = [str(DOCTOR / "bin/pip"), "install", "-q", f"lerobot-doctor=={DOCTOR_VERSION}"]
            subprocess.run(pip, check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(DOCTOR, ignore_errors=True)
            pytest.skip(f"lerobot-doctor {DOCTOR_VERSION} could not be installed ({exc})")
    return exe


@pytest.mark.slow
@pytest.mark.parametrize("store", ["ros-bags", "lerobot-with-cameras"])
def test_lerobot_doctor_finds_the_export_well_formed(settings, tmp_path, lerobot_doctor, store):
    if store == "ros-bags":  # a camera laid out in the store as the export expects
        _fleet_store(settings, tmp_path)
        add_camera(settings.episode_store, CAMERA)
        totals, cameras = (2, 45), [CAMERA]
    else:  # two cameras ingested by the real reader into the store's own videos
        _ingested_cameras(settings, tmp_path)
        totals, cameras = (4, 26), ["observation.images.front", "observation.images.wrist"]
    _export(settings, tmp_path / "export")
    done = subprocess.run(
        [str(lerobot_doctor), "check", str(tmp_path / "export"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["overall_severity"] != "FAIL"
    assert (report["codebase_version"], report["total_episodes"], report["total_frames"]) == (
        "v3.0",
        *totals,
    )
    # the format's checks pass outright, the camera's video included
    for name in (
        "Metadata & Format Compliance",
        "Temporal Consistency",
        "Video Integrity",
        "Feature Consistency",
        "Portability",
    ):
        assert checks[name]["severity"] == "PASS", checks[name]
    video = [m["message"] for m in checks["Video Integrity"]["messages"]]
    for camera in cameras:
        assert f"{camera}: All video files present" in video
    # stats.json misses only Flywheel's string columns, of which LeRobot keeps no stats
    missing = [
        m["message"]
        for m in checks["Data Distribution"]["messages"]
        if "not in stats.json" in m["message"]
    ]
    assert missing == [
        "Features in data but not in stats.json: "
        "['control_source', 'episode_id', 'policy_version', 'robot_id']"
    ]


LEROBOT = Path(__file__).parents[2] / ".venv-tools/lerobot/bin/python"


@pytest.mark.slow
@pytest.mark.skipif(
    not LEROBOT.exists(),
    reason="lerobot's own environment is not installed: `make lerobot-tools` (Python 3.12, ~5 GB)",
)
def test_lerobots_own_reader_loads_the_export(settings, tmp_path):
    _fleet_store(settings, tmp_path)
    add_camera(settings.episode_store, CAMERA)
    _export(settings, tmp_path / "export")
    done = subprocess.run(
        [str(LEROBOT), str(Path(__file__).parent / "lerobot_read.py"), str(tmp_path / "export")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # the local folder, never the Hub
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["frames"], seen["episodes"], seen["fps"], seen["robot_type"]) == (
        45,
        2,
        10,
        "ur5e",
    )
    assert seen["tasks"] == ["bin-pick", "bin-pick"]
    assert seen["names"] == [f"joint{i}.position" for i in range(4)]
    assert CAMERA in seen["stats"] and "observation.state" in seen["stats"]
    frames = pq.read_table(tmp_path / "export/data/chunk-000/file-000.parquet").to_pandas()
    np.testing.assert_allclose(seen["state"][0], frames["observation.state"].iloc[0], rtol=1e-6)
    # the camera's first frame is the first episode's shade, its last the second's
    np.testing.assert_allclose(seen["shades"][CAMERA], [40 / 255, 100 / 255], atol=0.03)
