"""The cameras suite: each camera fact that is wrong fails its episode, naming camera and step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.episodes.cameras import CameraFacts, CameraSpec, CameraTrack
from services.ingest.mapping import parse_mapping
from services.validation.embodiment import CameraDeclaration, Embodiment
from services.validation.suite import episode_facts, validate_episodes
from tests.validation.test_suite import episode

GOOD = CameraFacts(frames=20, max_age_s=0.05, max_gap_s=0.1, width=64, height=48, encoding="jpeg")


def track(name="front", path="front.mp4", **facts) -> CameraTrack:
    return CameraTrack(name, replace(GOOD, **facts), path=Path(path) if path else None)


def with_cameras(tmp_path, name, *tracks):
    raw = episode(tmp_path, name)
    raw.cameras = {t.name: t for t in tracks}
    return name, raw


BAD = {
    "late": (
        dict(missing_steps=3, path=None),
        "camera front: no frame at or before step 2 (3 steps before its first frame)",
    ),
    "none": (
        dict(missing_steps=20, frames=0, path=None),
        "camera front: no frame at or before any step (steps 0-19)",
    ),
    "stale-once": (
        dict(stale_steps=1, first_stale_step=41, max_age_s=0.4),
        "camera front: step 41's frame is 0.40 s old (limit 0.10 s)",
    ),
    "stale": (
        dict(stale_steps=4, first_stale_step=7, max_age_s=0.5, max_gap_s=0.6),
        "camera front: frames older than 0.10 s at 4 steps, first at step 7 (oldest 0.50 s, "
        "largest gap between frames 0.60 s)",
    ),
    "backwards": (
        dict(out_of_order=(5, 0.05), path=None),
        "camera front: frames out of order at step 5 (a frame 0.050 s older than the one "
        "before it)",
    ),
    "corrupt": (
        dict(decode_error=(9, "corrupt JPEG (broken data stream)"), path=None),
        "camera front: step 9's frame cannot be decoded: corrupt JPEG (broken data stream)",
    ),
    "resized": (
        dict(resolution_change=(12, 32, 24), path=None),
        "camera front: resolution changes from 64x48 to 32x24 at step 12",
    ),
    "frozen": (
        dict(frozen_from_step=3),
        "camera front: frozen from step 3 (identical frames for over 2 s)",
    ),
    "black": (
        dict(black_steps=2, first_black_step=6),
        "camera front: black frames at 2 steps, first at step 6 (10% of the steps; embodiment "
        "inferred allows 0%, max_black_fraction)",
    ),
    "no-video": (dict(path=None), "camera front: its frames made no video track"),
}


def test_each_bad_camera_fact_fails_its_episode_with_the_camera_and_the_step(tmp_path):
    batch = [with_cameras(tmp_path, "good", track(), track("wrist"))]
    for name, (facts, _) in BAD.items():
        path = facts.pop("path", "front.mp4")
        batch.append(with_cameras(tmp_path, name, track(path=path, **facts), track("wrist")))

    report = validate_episodes(episode_facts(batch))

    assert "good" not in report.failures
    assert report.failures == {name: [reason] for name, (_, reason) in BAD.items()}
    cameras = [s for s in report.result["suites"] if s["suite"] == "cameras-inferred"]
    assert cameras[0]["cameras"] == 2 * len(batch) and not cameras[0]["success"]


def test_the_mappings_staleness_limit_is_the_one_named(tmp_path):
    batch = [with_cameras(tmp_path, "e", track(stale_steps=1, first_stale_step=4, max_age_s=0.5))]
    specs = [CameraSpec("front", "/camera/front", max_age_s=0.25)]
    report = validate_episodes(episode_facts(batch, cameras=specs))
    assert report.failures["e"] == ["camera front: step 4's frame is 0.50 s old (limit 0.25 s)"]


def test_an_embodiment_declares_its_cameras_size_and_encoding(tmp_path):
    arm = Embodiment(
        name="arm",
        cameras=(
            CameraDeclaration("front", width=64, height=48, encoding="jpeg"),
            CameraDeclaration("wrist", encoding="h264"),
        ),
        max_black_fraction=0.25,
    )
    batch = [
        with_cameras(tmp_path, "good", track(), track("wrist", encoding="h264")),
        with_cameras(tmp_path, "no-wrist", track()),
        with_cameras(
            tmp_path, "small", track(width=32, height=24), track("wrist", encoding="h264")
        ),
        with_cameras(tmp_path, "png", track(encoding="png"), track("wrist", encoding="h264")),
        with_cameras(
            tmp_path,
            "dim",  # black at 10% of the steps: allowed
            track(black_steps=2, first_black_step=0),
            track("wrist", encoding="h264"),
        ),
    ]

    report = validate_episodes(episode_facts(batch, [arm]), embodiments=[arm])

    assert report.failures == {
        "no-wrist": ["camera wrist: embodiment arm declares it, the episode has no frames from it"],
        "small": ["camera front: frames are 32x24, embodiment arm declares 64x48"],
        "png": ["camera front: logs png, embodiment arm declares jpeg"],
    }


def test_the_mapping_file_declares_an_embodiments_cameras():
    mapping = parse_mapping(
        {
            "embodiments": [
                {
                    "name": "arm",
                    "cameras": {"front": {"width": 640, "height": 480, "encoding": "jpeg"}},
                    "max_black_fraction": 0.05,
                }
            ]
        }
    )
    [arm] = mapping.embodiments
    assert arm.cameras == (CameraDeclaration("front", 640, 480, "jpeg"),)
    assert arm.max_black_fraction == 0.05
    with pytest.raises(ValueError, match="encoding 'yuv' is none of"):
        parse_mapping({"embodiments": [{"name": "a", "cameras": {"f": {"encoding": "yuv"}}}]})
    with pytest.raises(ValueError, match="unknown key of embodiment camera f 'fps'"):
        parse_mapping({"embodiments": [{"name": "a", "cameras": {"f": {"fps": 30}}}]})
