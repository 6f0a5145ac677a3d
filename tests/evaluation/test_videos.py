"""Evaluation videos: the shown episodes run again with the camera on, in the real Meta-World
twin rendered by MuJoCo (OSMesa or EGL), checked against the stored outcome."""

from __future__ import annotations

import av
import numpy as np
import pytest

from services.evaluation.closed_loop import SUITE
from services.evaluation.trajectories import VIDEO_FPS, video_path
from services.evaluation.videos import film_episodes
from services.store import session_scope
from services.store.models import EvaluationEpisode
from services.twin.autonomous import run_autonomous
from services.twin.render import RenderError, gl_backend
from services.twin.tasks import make_env


@pytest.fixture
def reach_checkpoint(tmp_path):
    """A small untrained MLP for Meta-World's reach: it fails, as a filmed episode does."""
    import torch

    from policies import make_policy
    from policies.checkpoint import save_checkpoint
    from policies.mlp import MLPConfig
    from policies.normalization import NormalizationStats

    try:
        gl_backend()
    except RenderError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    config = MLPConfig(state_dim=39, action_dim=4, tasks=("reach",), hidden=(8,))
    stats = NormalizationStats.from_arrays(
        np.random.default_rng(0).normal(size=(20, 39)).astype(np.float32),
        np.zeros((20, 4), np.float32),
    )
    return save_checkpoint(tmp_path / "ckpt", make_policy(config), config, stats, {"step": 1})


def _store(settings, task, seed, success, steps):
    with session_scope(settings.db_url) as session:
        session.add(
            EvaluationEpisode(
                model_version="7",
                task=task,
                seed=seed,
                suite=SUITE,
                success=success,
                steps=steps,
                final_reward=0.0,
            )
        )


@pytest.mark.slow
def test_a_stored_episode_is_filmed_once_frame_per_step(settings, reach_checkpoint):
    from policies.checkpoint import load_checkpoint

    result = run_autonomous(make_env("reach"), 3, load_checkpoint(reach_checkpoint).act)
    _store(settings, "reach", 3, bool(result.success), int(result.steps))
    _store(settings, "reach", 4, True, 1)  # not what the policy does on seed 4
    written = film_episodes(settings, "7", reach_checkpoint, [("reach", 3), ("reach", 4)])
    path = video_path(settings, SUITE, "7", "reach", 3)
    assert written == [path]  # seed 4 ran differently with the camera on: no video of it
    assert not video_path(settings, SUITE, "7", "reach", 4).exists()
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        assert stream.average_rate == VIDEO_FPS
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(stream)]
    assert len(frames) == result.steps
    assert frames[0].shape == (96, 96, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the arm moved
    assert film_episodes(settings, "7", reach_checkpoint, [("reach", 3)]) == []  # kept


def test_a_task_without_cameras_films_nothing(settings, toy_checkpoint):
    _store(settings, "toy-reach", 0, False, 5)
    assert film_episodes(settings, "7", toy_checkpoint, [("toy-reach", 0)]) == []
