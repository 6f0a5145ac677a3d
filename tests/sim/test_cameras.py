"""The simulated robots' cameras: rendered by MuJoCo headless, uploaded as H.264 like a robot's."""

from __future__ import annotations

from datetime import UTC, datetime

import av
import numpy as np
import pytest
from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
from mcap.reader import make_reader

from services.config import Settings
from services.ingest.formats import contract
from services.ingest.formats.json_mcap import read_episode_mcap
from services.twin.render import CameraSetup, RenderError, find_backend
from services.twin.tasks import make_env
from sim.episode import robot_cameras, run_episode, upload
from sim.operator import Operator

STARTED = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def _record(env, setup: CameraSetup | None, seed: int = 3):
    with robot_cameras(env, setup) as cameras:
        return run_episode(
            env,
            seed,
            policy=None,
            operator=Operator(operator_id="lab-operator"),
            robot_id="robot-00",
            policy_version=None,
            started_at=STARTED,
            episode_uuid=f"camera-test-{seed}",
            cameras=cameras,
            camera_every=setup.every(env.control_hz) if setup else 1,
        )


def _camera_messages(path, name: str) -> list[tuple[int, CompressedVideo]]:
    with open(path, "rb") as stream:
        found = []
        for schema, channel, message in make_reader(stream).iter_messages(
            topics=[contract.CAMERA_PREFIX + name]
        ):
            assert (schema.name, channel.message_encoding) == (
                "foxglove.CompressedVideo",
                "protobuf",
            )
            video = CompressedVideo()
            video.ParseFromString(message.data)
            found.append((message.log_time, video))
        return found


@pytest.mark.slow
def test_a_metaworld_robot_uploads_its_cameras_as_h264_that_decodes_to_its_frames(tmp_path):
    env = make_env("pick-place")
    setup = CameraSetup(("front", "wrist"), px=64, hz=20.0)
    recording = _record(env, setup)
    every = setup.every(env.control_hz)
    assert every == 4  # Meta-World runs at 80 Hz: a frame every fourth step
    steps = len(recording.states)
    path = upload(recording, tmp_path / "episode.mcap", setup)

    start_ns = int(STARTED.timestamp() * 1e9)
    for name in ("front", "wrist"):
        messages = _camera_messages(path, name)
        # One message per frame, a frame every fourth step from step 0, at start + t.
        assert len(messages) == len(range(0, steps, every))
        expected = [
            start_ns + round(step / env.control_hz * 1e9) for step in range(0, steps, every)
        ]
        assert [log_time for log_time, _ in messages] == expected
        assert [m.timestamp.ToNanoseconds() for _, m in messages] == expected
        assert {(m.frame_id, m.format) for _, m in messages} == {(name, "h264")}
        # Annex B, and the first access unit starts the stream: SPS (NAL type 7) before any slice.
        first = messages[0][1].data
        assert first.startswith(b"\x00\x00\x00\x01") or first.startswith(b"\x00\x00\x01")
        assert b"\x00\x00\x01\x67" in first or b"\x00\x00\x01\x27" in first

        # PyAV decodes each message to one 64x64 frame, close to what the robot rendered.
        codec = av.CodecContext.create("h264", "r")
        frames = []
        for _, message in messages:
            frames += [f.to_ndarray(format="rgb24") for f in codec.decode(av.Packet(message.data))]
        frames += [f.to_ndarray(format="rgb24") for f in codec.decode(None)]
        assert len(frames) == len(messages)
        assert {f.shape for f in frames} == {(64, 64, 3)}
        rendered = [frame for _, frame in recording.camera_frames[name]]
        error = np.mean(
            [
                np.abs(a.astype(int) - b.astype(int)).mean()
                for a, b in zip(frames, rendered, strict=True)
            ]
        )
        assert error < 8, f"{name}: decoded frames differ from the rendered ones by {error:.1f}"
        # The arm moves, and the camera sees it: the first and last frames differ clearly.
        moved = np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean()
        assert moved > 2, f"{name}: first and last frames differ by {moved:.2f} only"

    # Flywheel's own reader gives the episode one track per camera, a frame for every step.
    episode = read_episode_mcap(path)
    for name in ("front", "wrist"):
        track = episode.cameras[name]
        assert track.path is not None and (track.facts.width, track.facts.height) == (64, 64)
        assert track.facts.stale_steps == 0 and track.facts.missing_steps == 0
        track.discard()


def test_the_toy_task_has_no_cameras_and_records_none(tmp_path):
    env = make_env("toy-reach")
    recording = _record(env, CameraSetup(("front",)))
    assert recording.camera_frames == {}
    path = upload(recording, tmp_path / "toy.mcap", CameraSetup(("front",)))
    with open(path, "rb") as stream:
        topics = {c.topic for c in make_reader(stream).get_summary().channels.values()}
    assert not any(t.startswith(contract.CAMERA_PREFIX) for t in topics)


@pytest.mark.slow
def test_an_unknown_camera_is_refused_naming_the_known_ones():
    env = make_env("pick-place")
    with pytest.raises(
        ValueError, match=r"unknown camera 'fornt' \(known: front, side, top, wrist\)"
    ):
        _record(env, CameraSetup(("fornt",)))


def test_no_gl_backend_says_what_to_install():
    with pytest.raises(RenderError, match="libegl-mesa0.*libosmesa6.*make render-libs"):
        find_backend(("no-such-backend",))


def test_cameras_are_a_setting(monkeypatch):
    assert CameraSetup.from_settings(Settings().fleet) == CameraSetup(
        ("front", "wrist"), px=64, hz=20.0
    )
    monkeypatch.setenv("FLYWHEEL_SIM_CAMERAS", '["wrist"]')
    monkeypatch.setenv("FLYWHEEL_SIM_CAMERA_PX", "96")
    assert CameraSetup.from_settings(Settings().fleet) == CameraSetup(("wrist",), px=96, hz=20.0)
    monkeypatch.setenv("FLYWHEEL_SIM_CAMERAS", "[]")
    assert CameraSetup.from_settings(Settings().fleet) is None
    with pytest.raises(ValueError, match="named twice"):
        CameraSetup(("front", "front"))
