"""A vision policy in the loop: it sees its cameras in closed-loop evaluation and on the
simulated robots, each frame as its training frames were made (the store's codecs)."""

from __future__ import annotations

import numpy as np
import pytest

from policies.images import CameraInput
from services.episodes.cameras import VideoFormat
from services.episodes.codec_pass import CodecPass
from services.evaluation.closed_loop import SUITE, evaluate_version
from services.store import session_scope
from services.store.models import EvaluationEpisode
from services.twin.autonomous import run_autonomous
from services.twin.eyes import PolicyEyes, policy_cameras
from services.twin.render import CameraSetup
from services.twin.tasks import make_env
from sim.fleet import Assignment, FleetConfig, run_shift
from tests.conftest import vision_checkpoint

TASK = "pick-place"
SETUP = CameraSetup(("front", "wrist"), px=32, hz=10.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _picture(g: int) -> np.ndarray:
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 200, 32, dtype=np.uint8)[None, :]
    frame[..., 1] = 40 + 5 * g
    frame[8:16, g : g + 8] = 240
    return frame


def test_the_codec_pass_gives_a_frame_codec_artefacts_and_keeps_it_close():
    codec = CodecPass(VideoFormat(), camera_hz=10, control_hz=20)
    for g in range(6):
        uploaded = codec.upload(_picture(g))
        stored = codec.store(uploaded)
        assert stored.shape == (32, 32, 3) and stored.dtype == np.uint8
        assert not np.array_equal(stored, _picture(g)) and _psnr(stored, _picture(g)) > 30


def test_the_codec_pass_refuses_what_it_cannot_stream():
    with pytest.raises(ValueError, match="FLYWHEEL_VIDEO_CODEC=libx264"):
        CodecPass(VideoFormat(codec="libsvtav1"), camera_hz=10, control_hz=20)
    codec = CodecPass(VideoFormat(), camera_hz=10, control_hz=20)
    with pytest.raises(ValueError, match="no frame uploaded yet"):
        codec.store(_picture(0))
    with pytest.raises(ValueError, match="even frame sides"):
        codec.upload(np.zeros((33, 32, 3), np.uint8))


def test_eyes_hold_a_frame_between_camera_frames_and_pass_raw_ones_untouched():
    cameras = (CameraInput("front", 16, 16, "raw"), CameraInput("wrist", 16, 16, "h264"))
    eyes = PolicyEyes(cameras, SETUP, control_hz=20, video_format=VideoFormat())
    with pytest.raises(ValueError, match="no camera frame yet"):
        eyes.see(None)
    first = eyes.see({"front": _picture(0), "wrist": _picture(0)})
    held = eyes.see(None)
    assert np.array_equal(first["front"], _picture(0)) and np.array_equal(
        held["front"], _picture(0)
    )
    assert _psnr(held["wrist"], _picture(0)) > 30 and not np.array_equal(
        first["wrist"], _picture(0)
    )
    with pytest.raises(ValueError, match="do not record"):
        PolicyEyes((CameraInput("top", 16, 16, "raw"),), SETUP, 20, VideoFormat())


@pytest.mark.slow
def test_closed_loop_shows_a_vision_policy_its_camera_each_step_as_the_robots_record_it():
    env = make_env(TASK)
    env.max_steps = 12
    seen = []

    def policy(state, task, images):
        seen.append(images)
        return np.zeros(4, np.float32)

    camera = CameraInput("front", 24, 24, "h264")
    with policy_cameras(env, (camera,), SETUP, VideoFormat()) as start:
        result = run_autonomous(env, 3, policy, look=start())
    assert result.steps == 12 and len(seen) == 12
    assert all(set(images) == {"front"} for images in seen)
    assert all(images["front"].shape == (SETUP.px, SETUP.px, 3) for images in seen)
    # The camera gives a frame every few control steps; a step between holds the last one, as
    # the store does: the same picture through the store's encode again (often exactly it).
    assert SETUP.every(env.control_hz) > 1
    assert _psnr(seen[0]["front"], seen[1]["front"]) > 35
    # A state policy renders nothing and gets no images.
    with policy_cameras(env, (), SETUP, VideoFormat()) as start:
        assert start()(0) is None
    blind = policy_cameras(env, (camera,), None, VideoFormat())
    with pytest.raises(ValueError, match="FLYWHEEL_SIM_CAMERAS is empty"), blind:
        pass


@pytest.mark.slow
def test_a_vision_champion_is_evaluated_through_its_camera_and_each_seed_stored_once(
    settings, tmp_path, monkeypatch
):
    monkeypatch.setenv("FLYWHEEL_SIM_CAMERA_PX", "32")
    from services.config import Settings

    settings = Settings()
    checkpoint = vision_checkpoint(tmp_path / "vision")
    outcomes = evaluate_version(settings, "5", checkpoint, [TASK], [0, 1])
    assert sorted(outcomes[TASK]) == [0, 1]
    with session_scope(settings.db_url) as session:
        rows = session.query(EvaluationEpisode).filter_by(model_version="5").all()
    assert sorted(r.seed for r in rows) == [0, 1] and {r.suite for r in rows} == {SUITE}
    assert all(r.steps > 0 for r in rows)


class _VisionClient:
    def __init__(self, policy):
        self.policy = policy
        self.heartbeats = 0

    def assignment(self, robot_id):
        return Assignment(
            version="5",
            policy=self.policy.act,
            cameras=self.policy.cameras,
            episode=self.policy.start_episode,
        )

    def heartbeat(self, robot_id, version, **counts):
        self.heartbeats += 1


@pytest.mark.slow
def test_a_simulated_robot_runs_a_vision_policy_on_its_own_cameras(tmp_path, monkeypatch):
    from policies.checkpoint import load_checkpoint

    policy = load_checkpoint(vision_checkpoint(tmp_path / "vision"))
    shown = []
    act = policy.act

    def watched(state, task, images=None):
        shown.append(images)
        return act(state, task, images)

    monkeypatch.setattr(policy, "act", watched)
    config = FleetConfig(robots=1, episodes_per_robot=1, tasks=(TASK,), cameras=SETUP)
    summary = run_shift(config, _VisionClient(policy), tmp_path / "logs", night=1)
    assert summary.episodes == 1 and len(summary.files) == 1
    assert shown and all(set(images) == {"front"} for images in shown)
    # No cameras on the robots: a vision assignment is refused, saying why.
    blind = FleetConfig(robots=1, episodes_per_robot=1, tasks=(TASK,), cameras=None)
    with pytest.raises(ValueError, match="record no cameras"):
        run_shift(blind, _VisionClient(policy), tmp_path / "blind", night=1)
