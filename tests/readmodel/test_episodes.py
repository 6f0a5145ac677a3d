"""The episode browser's read model on a store that ingest wrote: a robot's camera, logged as
H.264 in an MCAP, comes back as the episode's own clip, one frame per step."""

from __future__ import annotations

import av
import numpy as np
import pytest

from services.episode_store.parquet import EpisodeStore
from services.errors import NotFound
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.readmodel.episodes import camera_clip, episode_detail, episode_list
from services.store import session_scope
from tests.dashboards.videos import frame
from tests.ingest.cameras import h264
from tests.ingest.logs import recording

STEPS = 20


def test_an_ingested_camera_plays_as_its_episode_with_the_takeover(settings, tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    for robot in ("robot-00", "robot-01"):  # two episodes packed into one video file
        shade = 0 if robot == "robot-00" else 2
        pixels = [frame(step, shade) for step in range(STEPS)]
        front = list(zip(np.arange(STEPS) / 10.0, h264(pixels, fps=10.0, gop=5), strict=True))
        rec = recording(n=STEPS, robot_id=robot)  # the operator has steps 5..8
        write_episode_mcap(rec, folder / f"{robot}.mcap", cameras={"front": front})
    summary = ingest_logs(settings, source=str(folder))
    assert summary.quarantined == 0
    with session_scope(settings.db_url) as session:
        rows, total = episode_list(session, robot_id="robot-01")
        assert total == 1
        detail = episode_detail(settings, session, rows[0]["id"])
        assert detail["operator_spans"] == [(5, 9)]
        assert [c["name"] for c in detail["cameras"]] == ["front"]
        assert detail["cameras"][0]["fps"] == pytest.approx(10.0)
        clip = camera_clip(settings, session, rows[0]["id"], "front")
        with pytest.raises(NotFound, match="no camera 'wrist'"):
            camera_clip(settings, session, rows[0]["id"], "wrist")
    with av.open(str(clip)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert [int(np.argmax(f[32, :, 0])) for f in frames] == list(range(STEPS))
    shade = int(frame(0, 2)[0, 40, 1])  # robot-01's background, not robot-00's
    assert all(abs(int(f[0, 40, 1]) - shade) < 15 for f in frames)
    # deleting the episode deletes its clip too (data retention): the cache keeps no frames
    EpisodeStore(settings.episode_store).drop_episodes({rows[0]["id"]})
    assert not clip.exists()
