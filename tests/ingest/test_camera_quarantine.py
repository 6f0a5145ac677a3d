"""Bad camera input, end to end through ``ingest_logs``: every case of the bad-camera corpus (ROS 2
MCAPs and Flywheel's own contract) is quarantined with a reason naming the camera and the step,
and a good episode of the same upload is ingested."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from services.episode_store.index import list_episodes
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.ingest.mapping import FleetMapping, parse_mapping
from tests.ingest.cameras import frame, h264, jpeg
from tests.ingest.datasets import write_lerobot
from tests.ingest.logs import recording, write_bad_camera_uploads
from tests.ingest.ros_logs import (
    CAMERA_MAPPING,
    COMPRESSED_IMAGE,
    COMPRESSED_VIDEO,
    T0,
    camera_messages,
    episode_messages,
    write_bad_camera_logs,
    write_ros2_mcap,
)


def reasons_by_file(summary) -> dict[str, str]:
    return {Path(uri.split("#")[0]).name: reason for uri, reason in summary.quarantined_files}


def assert_named(reasons: dict[str, str], expected: dict[str, dict]) -> None:
    assert set(reasons) == set(expected)
    for name, expect in expected.items():
        reason = reasons[name]
        if "error" in expect:
            assert expect["error"] in reason, (name, reason)
            continue
        assert f"camera {expect['camera']}: " in reason, (name, reason)
        step = expect["step"]
        assert re.search(rf"\bstep {step}\b|\bsteps {step}-", reason), (name, reason)
        assert expect.get("fragment", "") in reason, (name, reason)


def test_every_bad_ros_camera_log_is_quarantined_naming_camera_and_step(settings, tmp_path):
    logs = tmp_path / "logs"
    expected = write_bad_camera_logs(logs / "bad")
    write_ros2_mcap(two_episodes(logs), logs / "good" / "two.mcap")

    summary = ingest_logs(settings, source=str(logs), mapping=parse_mapping(CAMERA_MAPPING))

    assert_named(reasons_by_file(summary), {**expected, "two.mcap": BLACK})
    [good] = list_episodes(settings, status="ok")  # the second episode of two.mcap
    assert (good.steps, good.source_uri.endswith("two.mcap#episode-1")) == (22, True)


def test_every_bad_contract_camera_is_quarantined_naming_camera_and_step(settings, tmp_path):
    logs = tmp_path / "logs"
    expected = write_bad_camera_uploads(logs / "bad")
    units = h264([frame(i) for i in range(70)])
    front = [(k / 30 - 0.01, unit) for k, unit in enumerate(units)]
    write_episode_mcap(recording(n=21), logs / "good.mcap", cameras={"front": front})

    summary = ingest_logs(settings, source=str(logs), mapping=FleetMapping())

    assert_named(reasons_by_file(summary), expected)
    assert summary.ingested == 1


# -- frozen, black and stale cameras: what a reader reads cleanly and only validation judges ---

START = T0 - 10_000_000  # cameras start 10 ms before the first step (30 Hz: step i, frame 3i)
PERIOD = 1_000_000_000 // 30  # the cameras' (camera_messages' default)
BLACK = {"camera": "wrist", "step": 4, "fragment": "black frames at step 4"}


def camera_episode(steps: int, wrist: list[np.ndarray], start_ns: int = T0) -> list:
    """One episode of ``steps`` 10 Hz steps with the cameras of ``CAMERA_MAPPING``: front a good
    H.264 stream, wrist the given frames as JPEGs (30 Hz)."""
    before = start_ns - T0 + START
    front = h264([frame(i) for i in range(steps * 3 + 3)])
    return [
        *episode_messages(steps=steps, start_ns=start_ns),
        *camera_messages(
            "/camera/front/video",
            [(COMPRESSED_VIDEO, ("h264", unit)) for unit in front],
            start_ns=before,
        ),
        *camera_messages(
            "/camera/wrist/compressed",
            [(COMPRESSED_IMAGE, ("jpeg", jpeg(f))) for f in wrist],
            start_ns=before,
        ),
    ]


def two_episodes(logs: Path) -> list:
    """A log of two episodes: the first's wrist camera shows a black frame at step 4, the
    second is good."""
    wrist = [frame(i) for i in range(63)]
    wrist[12] = np.zeros_like(wrist[12])
    second = [frame(i) for i in range(69)]
    messages = camera_episode(20, wrist) + camera_episode(22, second, start_ns=T0 + 5 * 10**9)
    return sorted(messages, key=lambda m: m.t_ns)


def test_frozen_and_stale_cameras_are_quarantined_naming_camera_and_step(settings, tmp_path):
    logs = tmp_path / "logs"
    frozen = [frame(i) for i in range(12)] + [frame(12)] * 111  # identical from step 4, 3.5 s
    write_ros2_mcap(camera_episode(40, frozen), logs / "frozen.mcap")
    # Wrist frames 12-20 are lost: steps 5 and 6 show frame 11, 0.14 and 0.24 s old.
    messages = [
        m
        for m in camera_episode(21, [frame(i) for i in range(66)])
        if m.topic != "/camera/wrist/compressed"
        or not START + 12 * PERIOD <= m.t_ns <= START + 20 * PERIOD
    ]
    write_ros2_mcap(sorted(messages, key=lambda m: m.t_ns), logs / "stale.mcap")

    summary = ingest_logs(settings, source=str(logs), mapping=parse_mapping(CAMERA_MAPPING))

    reasons = reasons_by_file(summary)
    assert reasons == {
        "frozen.mcap": "camera wrist: frozen from step 4 (identical frames for over 2 s)",
        "stale.mcap": "camera wrist: frames older than 0.10 s at 2 steps, first at step 5 "
        "(oldest 0.24 s, largest gap between frames 0.33 s)",
    }


def test_a_lerobot_dataset_with_a_missing_video_keeps_the_episodes_it_does_not_hold(
    settings, tmp_path
):
    root = write_lerobot(
        tmp_path / "logs" / "lab", ((6, None), (5, None), (7, None)), cameras=("front", "wrist")
    )
    (root / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()  # episodes 0, 1

    summary = ingest_logs(settings, source=str(tmp_path / "logs"))

    assert (summary.ingested, summary.quarantined) == (1, 2)
    for uri, reason in summary.quarantined_files:
        episode = uri.rsplit("#episode_", 1)[1]
        assert reason.startswith(f"episode {episode}: camera wrist: video file"), reason
