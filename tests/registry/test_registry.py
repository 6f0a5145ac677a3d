"""A real local MLflow store: registration with lineage, idempotency, the champion alias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.mlp import MLPConfig
from policies.normalization import NormalizationStats
from services.registry import mlflow_registry as registry

pytestmark = pytest.mark.slow


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    config = MLPConfig(state_dim=4, action_dim=2, tasks=("toy-reach",), hidden=(8,))
    stats = NormalizationStats.from_arrays(
        np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32),
        np.zeros((20, 2), np.float32),
    )
    return save_checkpoint(tmp_path / "ckpt", make_policy(config), config, stats, {"step": 1})


def _register(settings, checkpoint, candidate_id="c1", parent=None):
    return registry.register_candidate(
        settings,
        checkpoint_dir=checkpoint,
        candidate_id=candidate_id,
        dataset_id="d1",
        parent_version=parent,
        flow_run_id="flow-1",
        code_version="abc",
        params={"lr": 0.001},
        losses=[(1, 0.5), (2, 0.25)],
        manifest_path=None,
    )


def test_registered_candidate_carries_lineage_and_is_not_registered_twice(settings, checkpoint):
    first = _register(settings, checkpoint)
    assert _register(settings, checkpoint) == first
    tags = registry.model_version_tags(settings, first.version)
    assert tags["candidate_id"] == "c1" and tags["dataset_id"] == "d1"
    assert tags["flow_run_id"] == "flow-1" and tags["code_version"] == "abc"
    second = _register(settings, checkpoint, candidate_id="c2", parent=first.version)
    assert int(second.version) == int(first.version) + 1
    assert registry.model_version_tags(settings, second.version)["parent_version"] == first.version


def test_champion_alias_and_loading_a_version(settings, checkpoint):
    assert registry.champion_version(settings) is None
    version = _register(settings, checkpoint).version
    registry.set_champion(settings, version)
    assert registry.champion_version(settings) == version
    loaded = registry.load_policy(settings, version)
    original = load_checkpoint(checkpoint)
    state = np.array([0.1, -0.2, 0.3, 0.4], np.float32)
    assert np.array_equal(loaded.act(state, "toy-reach"), original.act(state, "toy-reach"))
