"""Real Ray Train runs on small data: learning, checkpoints, idempotency, resume/overwrite."""

from __future__ import annotations

import numpy as np
import pytest

from policies.checkpoint import load_checkpoint
from services.training.config import TrainConfig
from services.training.data import TrainingData
from services.training.job import fit_candidate
from services.training.loop import WorkerFault

pytestmark = pytest.mark.slow


def _data(n=2000) -> TrainingData:
    rng = np.random.default_rng(0)
    states = rng.normal(size=(n, 4)).astype(np.float32)
    actions = np.tanh(states[:, :2] - states[:, 2:]).astype(np.float32)
    return TrainingData(
        states, actions, np.zeros(n, np.int64), np.ones(n, np.float32), ("toy-reach",), "dataset-1"
    )


def test_training_lowers_the_loss_and_publishes_a_checkpoint_once(settings):
    config = TrainConfig(steps=400, checkpoint_every=200, log_every=50, hidden=(32, 32))
    result = fit_candidate(
        settings, _data(), candidate_id="cand-a", parent_checkpoint=None, config=config
    )
    assert result.losses[-1][1] < result.losses[0][1] / 3
    assert result.checkpoint_dir == settings.checkpoints_dir / "cand-a"
    policy = load_checkpoint(result.checkpoint_dir)
    assert policy.meta["dataset_id"] == "dataset-1" and policy.meta["step"] == 400
    assert not (result.checkpoint_dir / "train_state.pt").exists()
    # the policy learned the mapping (normalisation from the checkpoint's own statistics)
    data = _data(200)
    predicted = policy.act_batch(data.states, data.task_index)
    assert np.abs(predicted - data.actions).mean() < 0.15

    again = fit_candidate(
        settings, _data(), candidate_id="cand-a", parent_checkpoint=None, config=config
    )
    assert again.seconds == 0.0 and again.losses == result.losses

    tuned = fit_candidate(
        settings,
        _data(),
        candidate_id="cand-b",
        parent_checkpoint=result.checkpoint_dir,
        config=config,
    )
    # fine-tuning starts from the parent, so it starts far below a fresh run's first loss
    assert tuned.losses[0][1] < result.losses[0][1] / 3


def test_resume_and_overwrite_refuse_each_other():
    with pytest.raises(ValueError, match="refuse each other"):
        TrainConfig(resume=True, overwrite=True)


def test_an_interrupted_run_is_resumed_only_when_asked(settings):
    (settings.root / "ray_results" / "candidate-cand-c").mkdir(parents=True)
    config = TrainConfig(steps=50, checkpoint_every=50, log_every=50, hidden=(8,))
    with pytest.raises(RuntimeError, match="pass resume"):
        fit_candidate(
            settings, _data(), candidate_id="cand-c", parent_checkpoint=None, config=config
        )
    result = fit_candidate(
        settings,
        _data(),
        candidate_id="cand-c",
        parent_checkpoint=None,
        config=TrainConfig(**{**config.__dict__, "overwrite": True}),
    )
    assert result.checkpoint_dir.exists()


@pytest.mark.fault
def test_a_killed_worker_resumes_from_its_last_checkpoint_and_ends_where_it_would_have(
    settings, tmp_path
):
    config = TrainConfig(steps=300, checkpoint_every=100, log_every=50, hidden=(32, 32))
    clean = fit_candidate(
        settings, _data(), candidate_id="clean", parent_checkpoint=None, config=config
    )
    marker = tmp_path / "killed"
    killed = fit_candidate(
        settings,
        _data(),
        candidate_id="killed",
        parent_checkpoint=None,
        config=config,
        fault=WorkerFault(at_step=150, marker=str(marker)),
    )
    assert marker.exists()  # the worker really died at step 150 and Ray restarted it
    # Resumed from step 100 with the model, optimiser and sampler restored: the run ends
    # where the uninterrupted one did (tolerance 1e-6 relative; in practice bit-identical).
    assert [step for step, _ in killed.losses] == [step for step, _ in clean.losses]
    np.testing.assert_allclose(
        [loss for _, loss in killed.losses], [loss for _, loss in clean.losses], rtol=1e-6
    )
    a, b = load_checkpoint(clean.checkpoint_dir), load_checkpoint(killed.checkpoint_dir)
    for key, value in a.model.state_dict().items():
        assert np.allclose(value.numpy(), b.model.state_dict()[key].numpy(), rtol=1e-6)
