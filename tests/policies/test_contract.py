"""One contract, every registered policy: shapes, save -> load bit-exact, golden actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import available_policies, make_policy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.normalization import NormalizationStats
from policies.registry import config_class

TASKS = ("pick-place", "push")
# Actions of each policy, freshly initialised with torch.manual_seed(0), on the fixed input
# below; a change here means a change in what a stored checkpoint of that policy does.
GOLDEN = {
    "mlp": [[0.12091643, -0.18508701, 0.31055167], [0.06748347, -0.18079475, 0.26719755]],
    "act": [[0.39595926, -0.02285276, -0.51212484], [0.50982821, -0.36446220, 0.09352503]],
}


def _config(name: str):
    return config_class(name)(state_dim=5, action_dim=3, tasks=TASKS, hidden=(16, 16))


def _input():
    states = torch.linspace(-1, 1, 10, dtype=torch.float32).reshape(2, 5)
    return states, torch.tensor([0, 1])


@pytest.mark.parametrize("name", available_policies())
def test_policy_contract(name, tmp_path):
    torch.manual_seed(0)
    config = _config(name)
    model = make_policy(config).eval()
    states, tasks = _input()
    with torch.no_grad():
        actions = model(states, tasks)
    assert actions.shape == (2, 3) and actions.abs().max() <= 1.0
    np.testing.assert_allclose(actions.numpy(), GOLDEN[name], atol=1e-6)
    chunk = getattr(model, "chunk_size", 1)
    if chunk > 1:  # an action-chunking policy runs the first action of its chunk
        with torch.no_grad():
            chunks = model.forward_chunk(states, tasks)
        assert chunks.shape == (2, chunk, 3) and torch.equal(chunks[:, 0], actions)

    data = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    stats = NormalizationStats.from_arrays(data, np.zeros((50, 3), np.float32))
    path = save_checkpoint(tmp_path / "ckpt", model, config, stats, meta={"dataset_id": "d"})
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.meta["dataset_id"] == "d"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])
    state = data[0]
    # Under inference mode, as robots run it (a transformer takes PyTorch's fused fast path
    # there, which differs from the autograd path in the last bits).
    with torch.inference_mode():
        expected = model(torch.from_numpy(stats.normalize_state(state[None])), torch.tensor([1]))
    assert np.array_equal(loaded.act(state, "push"), expected.detach().numpy()[0])
    with pytest.raises(ValueError, match="not trained on task"):
        loaded.act(state, "drawer-open")


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*mlp.*did you mean 'mlp'"):
        config_class("mpl")


def test_checkpoints_are_written_atomically(tmp_path):
    config = _config("mlp")
    stats = NormalizationStats.from_arrays(
        np.zeros((2, 5), np.float32), np.zeros((2, 3), np.float32)
    )
    path = save_checkpoint(tmp_path / "ckpt", make_policy(config), config, stats, meta={})
    save_checkpoint(path, make_policy(config), config, stats, meta={"second": True})
    assert load_checkpoint(path).meta == {"second": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("name", available_policies())
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"state_dim": 0}, "must be positive"),
        ({"tasks": ()}, "non-empty and unique"),
        ({"tasks": ("push", "push")}, "non-empty and unique"),
        ({"hidden": (0,)}, "hidden widths"),
    ],
)
def test_every_policy_refuses_a_malformed_config(name, fields, message):
    good = {"state_dim": 5, "action_dim": 3, "tasks": TASKS, "hidden": (16,)}
    with pytest.raises(ValueError, match=message):
        config_class(name)(**{**good, **fields})
