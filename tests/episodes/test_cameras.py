"""Camera spools: frames decoded, aligned to steps, judged and encoded one per step."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from services.episodes.cameras import CameraSpec, CameraSpool, Payload, episode_tracks

SPEC = CameraSpec("front", "/camera/front", max_age_s=0.05, frozen_s=0.5)
PERIOD = 1_000_000_000 // 30


def _frames(n: int, width: int = 64, height: int = 48):
    for i in range(n):
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[..., 0] = (i * 7) % 255
        frame[i % height, :, 1] = 255
        yield frame


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG")
    return buffer.getvalue()


def _h264(frames) -> list[bytes]:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 64, 48, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.options = {"tune": "zerolatency", "bframes": "0", "repeat-headers": "1"}
    packets = []
    for i, frame in enumerate(frames):
        video = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video.pts = i
        packets += [bytes(p) for p in codec.encode(video)]
    return packets + [bytes(p) for p in codec.encode(None)]


def _decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_mixed_raw_and_jpeg_frames_make_one_frame_per_step_for_each_episode():
    spool = CameraSpool(SPEC)
    for i, frame in enumerate(_frames(60)):
        if i % 2:
            spool.add(i * PERIOD, Payload("raw", frame[..., ::-1].tobytes(), 64, 48, "bgr8"))
        else:
            spool.add(i * PERIOD, Payload("jpeg", _jpeg(frame)))
    first, second = np.arange(0, 30) * PERIOD + 10, np.arange(31, 59) * PERIOD + 10
    tracks = episode_tracks(spool, [(first, 30.0), (second, 30.0)])
    assert [len(_decoded(t.path)) for t in tracks] == [30, 28]
    assert tracks[0].facts.frames == 29 and tracks[0].facts.stale_steps == 0
    assert (tracks[0].facts.width, tracks[0].facts.height) == (64, 48)
    assert tracks[0].digest != tracks[1].digest
    # The store's lossy codec keeps the picture: step 5's frame is frame 5's.
    expected = list(_frames(60))[35].astype(float)
    assert np.abs(_decoded(tracks[1].path)[4].astype(float) - expected).mean() < 8
    for track in tracks:
        track.discard()


def test_a_step_whose_frame_is_too_old_is_stale_and_named():
    spool = CameraSpool(SPEC)
    for i, frame in enumerate(_frames(30)):
        if not 10 <= i < 20:  # the camera drops out for a third of a second
            spool.add(i * PERIOD, Payload("raw", frame.tobytes(), 64, 48, "rgb8"))
    (track,) = episode_tracks(spool, [(np.arange(30) * PERIOD, 30.0)])
    assert track.facts.first_stale_step == 11  # frame 9 is held: 0.067 s old at step 11
    assert track.facts.stale_steps == 9
    assert track.facts.max_gap_s == pytest.approx(11 / 30, abs=1e-3)
    track.discard()


def test_h264_stream_decodes_and_damage_is_named_by_step():
    packets = _h264(_frames(40))
    ticks = np.arange(40) * PERIOD

    def track(messages):
        spool = CameraSpool(SPEC)
        for i, data in enumerate(messages):
            spool.add(i * PERIOD, Payload("h264", data))
        (result,) = episode_tracks(spool, [(ticks[: len(messages)], 30.0)])
        return result

    good = track(packets)
    assert good.path is not None and len(_decoded(good.path)) == 40
    good.discard()
    truncated = track([p if i != 20 else p[: len(p) // 2] for i, p in enumerate(packets)])
    assert truncated.path is None and truncated.facts.decode_error[0] == 20
    headless = track(packets[5:])  # starts without the keyframe and its SPS/PPS
    assert headless.path is None and headless.facts.decode_error[0] == 0


def test_corrupt_jpeg_resolution_change_frozen_and_black_frames_are_facts():
    def track(frames, damage=None):
        spool = CameraSpool(SPEC)
        for i, frame in enumerate(frames):
            data = _jpeg(frame)
            spool.add(i * PERIOD, Payload("jpeg", damage(i, data) if damage else data))
        (result,) = episode_tracks(spool, [(np.arange(len(frames)) * PERIOD, 30.0)])
        return result

    corrupt = track(list(_frames(10)), lambda i, d: d[: len(d) // 3] if i == 4 else d)
    assert corrupt.facts.decode_error[0] == 4 and "JPEG" in corrupt.facts.decode_error[1]
    resized = track(list(_frames(5)) + list(_frames(5, width=80)))
    assert resized.facts.resolution_change == (5, 80, 48) and resized.path is None
    still = track([next(_frames(1))] * 30)
    assert still.facts.frozen_from_step == 0 and still.path is not None
    still.discard()
    black = track([np.zeros((48, 64, 3), np.uint8)] * 3 + list(_frames(3)))
    assert black.facts.black_steps == 3 and black.facts.first_black_step == 0
    black.discard()


def test_frames_that_go_back_in_time_are_out_of_order():
    spool = CameraSpool(SPEC)
    times = [0, PERIOD, 3 * PERIOD, 2 * PERIOD, 4 * PERIOD]
    for t, frame in zip(times, _frames(5), strict=True):
        spool.add(t, Payload("raw", frame.tobytes(), 64, 48, "rgb8"))
    (track,) = episode_tracks(spool, [(np.arange(5) * PERIOD, 30.0)])
    assert track.facts.out_of_order is not None and track.path is None


def test_a_camera_topic_with_no_frames_misses_every_step():
    (track,) = episode_tracks(CameraSpool(SPEC), [(np.arange(5) * PERIOD, 30.0)])
    assert track.facts.missing_steps == 5 and track.facts.frames == 0 and track.path is None
