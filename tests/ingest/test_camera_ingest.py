"""Ingest carries camera tracks from the readers into the episode store's video files.

The readers that fill ``RawEpisode.cameras`` from log messages are tested with their formats;
here the MCAP reader is wrapped to add tracks made by the core's ``episode_tracks`` to the
episodes it reads, in the folder and format ingest hands it, as those readers do.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.curation.deletion import delete_episodes
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.episode_store.videos import VIDEO_PATH, decode_frames
from services.ingest import batch
from services.ingest.batch import episode_digest, ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.episode_store.cameras import HZ, camera_episode, camera_tracks, frame
from tests.ingest.datasets import frame as dataset_frame
from tests.ingest.datasets import write_lerobot
from tests.ingest.logs import recording

KEY = "observation.images.front"
STEPS = 12


@pytest.fixture
def camera_reader(monkeypatch):
    """The MCAP reader, with a front camera added to each episode: robot-0N shows
    ``frame(N, step)``; robot-09's camera is half as wide as the others'."""
    real = batch.read_mcap
    seen = []

    def read_mcap(stream, mapping, *, directory, video_format):
        episodes = real(stream, mapping, directory=directory, video_format=video_format)
        for raw in episodes:
            seed = int(raw.robot_id.removeprefix("robot-"))
            width = 32 if seed == 9 else 64
            raw.cameras = camera_tracks(
                seed, raw.steps, directory, width=width, video_format=video_format
            )
            seen.append((directory, raw.cameras["front"].path))
        return episodes

    monkeypatch.setattr(batch, "read_mcap", read_mcap)
    return seen


def _logs(folder, robots):
    for robot in robots:
        episode = recording(n=STEPS, robot_id=f"robot-{robot:02d}", control_hz=HZ)
        write_episode_mcap(episode, folder / f"{robot}.mcap")
    return folder


def test_camera_episodes_are_ingested_into_video_files_and_their_tracks_discarded(
    settings, tmp_path, camera_reader
):
    settings = settings.updated(video={"codec": "libx264", "gop": 4})
    summary = ingest_logs(settings, source=str(_logs(tmp_path / "logs", [1, 2, 9])))

    assert (summary.ingested, summary.quarantined) == (2, 1)
    ((uri, reason),) = summary.quarantined_files
    assert uri.endswith("9.mcap")
    assert "cameras (front 32x48) differ from the episode store's (front 64x48)" in reason
    store = EpisodeStore(settings.episode_store)
    # Every track was written in a spool folder under the store, and none is left.
    assert all(folder.parent == store.root / ".spool" for folder, _ in camera_reader)
    assert not any(path.exists() for _, path in camera_reader)
    assert not list((store.root / ".spool").iterdir())
    # The settings' format reached the readers: the store's files are H.264.
    assert store.info()["features"][KEY]["info"]["video.codec"] == "h264"
    video = VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=0)
    assert store.video_files() == {video}
    rows = {r["robot_id"]: r for r in store.episodes_meta().to_pylist()}
    for seed in (1, 2):
        start = rows[f"robot-0{seed}"][f"videos/{KEY}/from_timestamp"]
        steps = [0, 5, 11]
        decoded = decode_frames(store.root / video, [start + s / HZ for s in steps], HZ)
        for step, pixels in zip(steps, decoded, strict=True):
            assert np.abs(pixels.astype(float) - frame(seed, step)).mean() < 12

    # The same logs again: nothing new, nothing left in the spool.
    again = ingest_logs(settings, source=str(tmp_path / "logs"))
    assert (again.ingested, again.skipped) == (0, 3)
    assert not list((store.root / ".spool").iterdir())

    # Deleting an episode takes its frames out of the video file.
    gone = next(e.id for e in list_episodes(settings, "ok") if e.robot_id == "robot-01")
    report = delete_episodes(settings, ids=[gone], reason="asked", actor="fatima")
    assert video in report.data_files
    (rewritten,) = store.video_files()
    start = store.episodes_meta()[f"videos/{KEY}/from_timestamp"].to_pylist()
    assert start == [0.0]
    (pixels,) = decode_frames(store.root / rewritten, [3 / HZ], HZ)
    assert np.abs(pixels.astype(float) - frame(2, 3)).mean() < 12


def test_an_episode_digest_includes_its_camera_frames(tmp_path):
    one = camera_episode(1, 8, tmp_path)
    same = dataclasses.replace(one, cameras=camera_tracks(1, 8, tmp_path))
    other = dataclasses.replace(one, cameras=camera_tracks(2, 8, tmp_path))
    blind = dataclasses.replace(one, cameras={})
    assert episode_digest(one) == episode_digest(same)
    assert len({episode_digest(one), episode_digest(other), episode_digest(blind)}) == 3


def test_a_lerobot_dataset_with_videos_goes_through_ingest_into_the_store(settings, tmp_path):
    # The real reader: a LeRobot v3.0 dataset, two cameras, two episodes packed per file.
    write_lerobot(tmp_path / "logs/lerobot", episodes=((10, None), (7, None)), cameras=("a", "b"))
    summary = ingest_logs(settings, source=str(tmp_path / "logs"))

    assert (summary.ingested, summary.quarantined) == (2, 0)
    store = EpisodeStore(settings.episode_store)
    assert set(store.cameras()) == {"observation.images.a", "observation.images.b"}
    assert not list((store.root / ".spool").iterdir())
    rows = sorted(store.episodes_meta().to_pylist(), key=lambda r: r["length"], reverse=True)
    for camera, name in enumerate(("a", "b")):
        key = f"observation.images.{name}"
        for episode, row in enumerate(rows):
            path = store.root / VIDEO_PATH.format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            start = row[f"videos/{key}/from_timestamp"]
            steps = [0, row["length"] - 1]
            decoded = decode_frames(path, [start + s / 30 for s in steps], 30)
            for step, pixels in zip(steps, decoded, strict=True):
                expected = dataset_frame(camera, episode, step).astype(float)
                assert np.abs(pixels.astype(float) - expected).mean() < 6
