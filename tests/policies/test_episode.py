"""ACT as its users know it: chunks run with temporal ensembling through an episode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.checkpoint import LoadedPolicy
from policies.episode import EpisodeActor, TemporalEnsemble
from policies.normalization import NormalizationStats
from policies.registry import config_class


def _chunk(step: int) -> np.ndarray:
    """A fake chunk predicted at ``step``: row i (for step + i) holds 10 * step + i."""
    return np.array([[10.0 * step + i, -(10.0 * step + i)] for i in range(3)])


def test_the_ensemble_is_acts_weighted_mean_of_every_prediction_for_now():
    ensemble = TemporalEnsemble(chunk_size=3, m=0.01)
    actions = [ensemble.add(_chunk(step)) for step in range(5)]
    assert actions[0].tolist() == [0.0, -0.0]  # one prediction: the first action
    # Step 1: chunk 0's row 1 (value 1) weighs exp(0), chunk 1's row 0 (value 10) exp(-0.01).
    w = [1.0, math.exp(-0.01)]
    assert actions[1][0] == pytest.approx((w[0] * 1 + w[1] * 10) / sum(w))
    # Step 4: the chunks of steps 2, 3, 4 predict 22, 31, 40; the oldest weighs the most.
    w = [1.0, math.exp(-0.01), math.exp(-0.02)]
    expected = (w[0] * 22 + w[1] * 31 + w[2] * 40) / sum(w)
    assert actions[4].tolist() == pytest.approx([expected, -expected])


def test_m_zero_is_the_plain_mean_and_a_larger_m_trusts_older_predictions():
    plain, steep = TemporalEnsemble(3, m=0.0), TemporalEnsemble(3, m=5.0)
    for step in range(3):
        a, b = plain.add(_chunk(step)), steep.add(_chunk(step))
    assert a[0] == pytest.approx((2 + 11 + 20) / 3)
    assert 2 < b[0] < 2.2  # almost all the weight on the oldest chunk's prediction
    with pytest.raises(ValueError, match=r"chunk of shape \(3, A\)"):
        plain.add(np.zeros((2, 2)))


def _policy(name: str) -> LoadedPolicy:
    torch.manual_seed(0)
    config = config_class(name)(state_dim=4, action_dim=2, tasks=("reach",), hidden=(16,))
    stats = NormalizationStats.from_arrays(np.zeros((2, 4)), np.zeros((2, 2)))
    return LoadedPolicy(make_policy(config), config, stats, meta={})


def test_an_act_episode_ensembles_the_chunks_the_policy_predicts():
    policy = _policy("act")
    states = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    actor = policy.start_episode()
    actions = [actor(s, "reach") for s in states]
    chunks = [policy.act_chunk(s, "reach") for s in states]
    assert chunks[0].shape == (policy.chunk_size, 2)
    assert np.array_equal(actions[0], policy.act(states[0], "reach"))
    w = np.exp(-0.01 * np.arange(3))
    expected = (w[0] * chunks[0][2] + w[1] * chunks[1][1] + w[2] * chunks[2][0]) / w.sum()
    np.testing.assert_allclose(actions[2], expected, rtol=1e-6)
    assert not np.allclose(actions[2], policy.act(states[2], "reach"))
    # A new episode starts with nothing to ensemble.
    assert np.array_equal(
        policy.start_episode()(states[2], "reach"), policy.act(states[2], "reach")
    )


def test_a_policy_of_one_action_per_step_just_acts():
    policy = _policy("mlp")
    actor = policy.start_episode()
    assert isinstance(actor, EpisodeActor) and policy.chunk_size == 1
    for state in np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32):
        assert np.array_equal(actor(state, "reach"), policy.act(state, "reach"))
