"""The camera ingest benchmark's parts on a tiny corpus: every logged frame is decoded, the
floor and the store both hold one frame per step and camera, and the sizes are real."""

from __future__ import annotations

from bench.camera_ingest import (
    CAMERAS,
    MAPPING,
    camera_streams,
    generate,
    raw_decode,
    store_floor,
    stored_videos,
)
from services.episodes.cameras import VideoFormat
from services.ingest.batch import ingest_logs
from services.ingest.mapping import parse_mapping


def test_raw_floor_and_ingest_count_the_corpus_frames(tmp_path, settings):
    log = generate(tmp_path / "corpus", logs=4, episodes=2, episode_s=1.0, size=32)
    steps = 4 * 2 * 10
    assert log["steps"] == steps
    assert log["camera_messages"] == 4 * 2 * len(CAMERAS) * 31  # 30 Hz from 10 ms before
    assert log["camera_bytes"] > 0
    assert sorted(p.parent.name for p in (tmp_path / "corpus").rglob("*.mcap")) == [
        "part-0", "part-1", "part-2", "part-3"
    ]  # fmt: skip

    streams = camera_streams(tmp_path / "corpus")
    assert len(streams) == 4 * len(CAMERAS)
    assert sum(len(s["payloads"]) for s in streams) == log["camera_messages"]
    assert raw_decode(streams) == log["camera_messages"]

    out = tmp_path / "floor"
    out.mkdir()
    decoded, encoded = store_floor(streams, out, VideoFormat(codec="libx264"))
    assert (decoded, encoded) == (log["camera_messages"], steps * len(CAMERAS))
    assert len(list(out.glob("*.mp4"))) == 4 * 2 * len(CAMERAS)  # per camera per episode

    summary = ingest_logs(settings, source=str(tmp_path / "corpus"), mapping=parse_mapping(MAPPING))
    assert (summary.ingested, summary.quarantined, summary.duplicates) == (8, 0, 0)
    size, frames = stored_videos(settings.episode_store)
    assert frames == steps * len(CAMERAS)
    assert 0 < size / frames < 32 * 32 * 3
