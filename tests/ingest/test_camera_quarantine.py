"""Bad camera input, end to end through ``ingest_logs``: each case is quarantined with a reason
naming the camera and the step, and the good episode of the same upload is ingested.

The episodes come from a real ROS 2 MCAP read by the real reader. Until the ROS reader reads
camera topics itself (the camera readers' branch), each episode's camera track is made here by
the core's ``episode_tracks`` from a spool of these frames, on the episode's own step times,
and attached to the episode the reader read: everything after the reader is the real path.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from services.episode_store.index import list_episodes
from services.episodes.cameras import CameraSpec, CameraSpool, Payload, episode_tracks
from services.ingest import batch
from services.ingest.batch import ingest_logs
from services.ingest.mapping import FleetMapping
from services.ingest.readers import read_mcap
from tests.ingest.ros_logs import T0, episode_messages, write_ros2_mcap

SPEC = CameraSpec("front", "/camera/front", max_age_s=0.15, frozen_s=0.5)
MAPPING = FleetMapping(cameras=(SPEC,))
BAD_STEP = 4
SIZE = (64, 48)


def frames(n: int, size=SIZE) -> list[np.ndarray]:
    width, height = size
    result = []
    for i in range(n):
        frame = np.full((height, width, 3), 60, np.uint8)
        frame[..., 0] = (i * 23) % 255
        frame[i % height, :, 1] = 255
        result.append(frame)
    return result


def jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG")
    return buffer.getvalue()


def h264(images: list[np.ndarray]) -> list[bytes]:
    """One H.264 Annex B access unit per frame, the first a keyframe with SPS/PPS."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = *SIZE, "yuv420p"
    codec.time_base = Fraction(1, 10)
    codec.options = {"tune": "zerolatency", "bframes": "0", "repeat-headers": "1"}
    packets = []
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets + [bytes(p) for p in codec.encode(None)]


def messages(steps: int, case: str) -> list[tuple[int, Payload]]:
    """(offset in steps' periods, payload) of the camera for one episode of ``case``."""
    images = frames(steps)
    k = BAD_STEP
    if case == "black":
        images[k] = np.zeros_like(images[k])
    if case == "frozen":
        images[k:] = [images[k]] * (steps - k)
    if case == "resolution-change":
        images[k:] = frames(steps - k, size=(32, 24))
    if case == "h264-no-keyframe":  # recording joined a stream after its keyframe
        packets = h264(frames(steps + k))[k:]
        return [(i, Payload("h264", p)) for i, p in enumerate(packets)]
    if case == "h264-truncated":
        packets = h264(images)
        packets[k] = packets[k][: len(packets[k]) // 2]
        return [(i, Payload("h264", p)) for i, p in enumerate(packets)]
    payloads = [Payload("jpeg", jpeg(image)) for image in images]
    if case == "corrupt-jpeg":
        payloads[k] = Payload("jpeg", payloads[k].data[: len(payloads[k].data) // 3])
    offsets = list(range(steps))
    if case == "no-frames":
        return []
    if case == "stale":  # the camera drops out for three steps
        return [(i, p) for i, p in zip(offsets, payloads, strict=True) if not k <= i < k + 3]
    if case == "out-of-order":
        offsets[k], offsets[k + 1] = offsets[k + 1], offsets[k]
    return list(zip(offsets, payloads, strict=True))


# case -> what its reason must say (each also names camera front)
CASES = {
    "good": None,
    "corrupt-jpeg": f"step {BAD_STEP}'s frame cannot be decoded: corrupt JPEG",
    "h264-truncated": f"step {BAD_STEP}'s frame cannot be decoded",
    "h264-no-keyframe": "step 0's frame cannot be decoded: undecodable H.264",
    "no-frames": "no frame at or before any of the episode's",
    "resolution-change": f"resolution changes from 64x48 to 32x24 at step {BAD_STEP}",
    "out-of-order": f"frames out of order at step {BAD_STEP + 1}",  # where time goes back
    "stale": f"frames older than 0.15 s at 2 steps, first at step {BAD_STEP + 1}",
    "frozen": f"frozen from step {BAD_STEP} (identical frames for over 0.5 s)",
    "black": f"black frames at step {BAD_STEP}",
}
PERIOD = 100_000_000  # the log's 10 Hz steps
FIRST_STEPS = 12


def step_times(raw) -> np.ndarray:
    start = round(raw.started_at.timestamp() * 1e6) * 1000
    return start + np.round(raw.timestamps * 1e9).astype(np.int64)


@pytest.fixture
def camera_reader(monkeypatch, tmp_path):
    """The real ROS reader, its episodes given the front camera of the case their length
    names (``FIRST_STEPS + n`` steps: the n-th case)."""
    cases = list(CASES)

    def read(stream, mapping):
        episodes = read_mcap(stream, mapping)
        for raw in episodes:
            case = cases[raw.steps - FIRST_STEPS]
            ticks = step_times(raw)
            spool = CameraSpool(SPEC, tmp_path)
            for offset, payload in messages(raw.steps, case):
                spool.add(int(ticks[0]) + offset * PERIOD - 1_000_000, payload)
            [raw.cameras[SPEC.name]] = episode_tracks(
                spool, [(ticks, raw.control_hz)], directory=tmp_path
            )
            spool.close()
        return episodes

    monkeypatch.setattr(batch, "read_mcap", read)


def test_each_bad_camera_is_quarantined_naming_camera_and_step_and_the_good_episode_kept(
    settings, tmp_path, camera_reader
):
    log = []
    for n in range(len(CASES)):
        log += episode_messages(steps=FIRST_STEPS + n, start_ns=T0 + n * 5 * 10**9)
    write_ros2_mcap(log, tmp_path / "logs" / "cameras.mcap")

    summary = ingest_logs(settings, source=str(tmp_path / "logs"), mapping=MAPPING)

    assert (summary.ingested, summary.quarantined) == (1, len(CASES) - 1)
    reasons = {row.steps: row.reason for row in list_episodes(settings, status="quarantined")}
    for n, (case, expected) in enumerate(CASES.items()):
        if expected is None:
            continue
        reason = reasons[FIRST_STEPS + n]
        assert f"camera front: {expected}" in reason, (case, reason)
    [good] = list_episodes(settings, status="ok")
    assert good.steps == FIRST_STEPS
    # No camera track is left behind: the store keeps what it packs, ingest removes the rest.
    assert not list(tmp_path.glob("front-*.mp4"))
