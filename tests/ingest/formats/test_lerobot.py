"""Episodes imported from LeRobot v3.0 datasets."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from services.episodes.model import LogFormatError
from services.ingest.formats.lerobot import read_lerobot
from services.ingest.formats.tracks import discard
from tests.ingest.datasets import assert_frames, frame, write_lerobot, write_video

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


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


EPISODES = ((8, None), (6, [2, 3]), (7, None), (5, None))


def test_lerobot_videos_become_the_episodes_cameras(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES, cameras=("front", "wrist"), per_video_file=2)
    spool = tmp_path / "spool"
    spool.mkdir()
    read = list(read_lerobot(root, {}, WHEN, directory=spool))
    assert [name for name, _ in read] == ["episode_0", "episode_1", "episode_2", "episode_3"]
    for e, (_, raw) in enumerate(read):
        assert list(raw.cameras) == ["front", "wrist"]
        for c, track in enumerate(raw.cameras.values()):
            facts = track.facts
            assert track.path.parent == spool and track.fps == 30
            assert (facts.frames, facts.missing_steps, facts.stale_steps) == (raw.steps, 0, 0)
            assert (facts.width, facts.height, facts.encoding) == (64, 64, "rgb8")
            assert_frames(track, c, e, raw.steps)
    assert len(list(spool.iterdir())) == 8


def test_damaged_lerobot_videos_fail_their_episodes_and_name_the_camera(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES, cameras=("front", "wrist"), short=2)
    wrist = "videos/observation.images.wrist/chunk-000"
    (root / wrist / "file-000.mp4").unlink()
    spool = tmp_path / "spool"
    spool.mkdir()
    results = dict(read_lerobot(root, {}, WHEN, directory=spool))
    for e in (0, 1):
        assert str(results[f"episode_{e}"]) == (
            f"episode {e}: camera wrist: video file {wrist}/file-000.mp4 is missing"
        )
    assert set(results["episode_2"].cameras) == {"front", "wrist"}
    # The last file of the front camera lacks the last 2 frames of episode 3.
    assert str(results["episode_3"]) == (
        "episode 3: camera front: videos/observation.images.front/chunk-000/file-001.mp4 holds "
        "3 frames in the episode's span 0.233-0.400 s for its 5 steps (the video ends early)"
    )
    # Only episode 2's tracks are left: the failed episodes' were removed.
    assert len(list(spool.iterdir())) == 2

    # Frames missing inside the span (a decoder drops damaged ones): too few for the steps.
    front = root / "videos/observation.images.front/chunk-000/file-001.mp4"
    write_video(front, [frame(0, e, i) for e in (2, 3) for i in range(EPISODES[e][0])], 30, {3, 4})
    results = dict(read_lerobot(root, {}, WHEN, directory=spool))
    assert str(results["episode_2"]) == (
        "episode 2: camera front: videos/observation.images.front/chunk-000/file-001.mp4 holds "
        "5 frames in the episode's span 0.000-0.233 s for its 7 steps"
    )
    assert set(results["episode_3"].cameras) == {"front", "wrist"}
    discard(results["episode_3"].cameras)
    assert len(list(spool.iterdir())) == 2  # the first read's episode 2 only

    (root / wrist / "file-001.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(300))
    results = dict(read_lerobot(root, {}, WHEN, directory=spool))
    assert isinstance(results["episode_3"], LogFormatError)
    assert str(results["episode_3"]) == (
        f"episode 3: camera wrist: {wrist}/file-001.mp4 is undecodable (Invalid data found when "
        "processing input)"
    )
    assert len(list(spool.iterdir())) == 2  # episode 3's front track went with it


def test_lerobot_image_features_in_the_data_files_become_cameras(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES[:2])
    data = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    images = []
    for e, step in zip(
        table["episode_index"].to_pylist(), table["frame_index"].to_pylist(), strict=True
    ):
        buffer = io.BytesIO()
        Image.fromarray(frame(0, e, step)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    images[3] = {"bytes": b"not an image", "path": None}  # episode 0, step 3
    pq.write_table(table.append_column("observation.images.top", pa.array(images)), data)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.top"] = {"dtype": "image", "shape": [64, 64, 3]}
    (root / "meta/info.json").write_text(json.dumps(info))

    [(_, broken), (_, good)] = list(read_lerobot(root, {}, WHEN, directory=tmp_path))
    assert broken.cameras["top"].path is None  # no video of a camera with a bad frame
    assert broken.cameras["top"].facts.decode_error == (3, "the image is neither PNG nor JPEG")
    assert_frames(good.cameras["top"], 0, 1, good.steps)
