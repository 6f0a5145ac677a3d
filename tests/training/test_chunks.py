"""Action chunks for action-chunking policies, and the ACT policy learning from them."""

import numpy as np
import pytest

from services.training.config import TrainConfig
from services.training.data import TrainingData, actions_ahead
from services.training.loop import Run


def test_actions_ahead_stay_within_their_episode_and_are_padded_with_its_last_action():
    actions = np.arange(5, dtype=np.float32)[:, None]  # episode a: 0 1 2, episode b: 3 4
    ahead, mask = actions_ahead(actions, np.array(["a", "a", "a", "b", "b"]), horizon=3)
    assert ahead[..., 0].tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]]
    assert mask.tolist() == [
        [True, True, True],
        [True, True, False],
        [True, False, False],
        [True, True, False],
        [True, False, False],
    ]


def _episodes(n_episodes=40, length=50) -> TrainingData:
    """Smooth trajectories whose action is the next state's change: predictable ahead."""
    rng = np.random.default_rng(0)
    states, ids = [], []
    for e in range(n_episodes):
        start, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        t = np.linspace(0, 1, length)[:, None]
        states.append(np.c_[start + t * (goal - start), np.repeat(goal[None], length, 0)])
        ids += [f"e{e}"] * length
    states = np.concatenate(states).astype(np.float32)
    actions = np.tanh(2 * (states[:, 2:] - states[:, :2])).astype(np.float32)
    ahead, mask = actions_ahead(actions, np.array(ids))
    n = len(states)
    return TrainingData(
        states,
        actions,
        np.zeros(n, np.int64),
        np.ones(n, np.float32),
        ("toy-reach",),
        "d",
        actions_ahead=ahead,
        ahead_mask=mask,
    )


def test_the_act_policy_learns_whole_chunks():
    data = _episodes()
    config = TrainConfig(policy="act", steps=300, batch_size=128, log_every=50, hidden=(64,))
    run = Run.start(config, data, parent=None)
    assert run.model.chunk_size == 8
    run.fit(on_checkpoint=lambda run: None)
    assert run.losses[-1][1] < run.losses[0][1] / 4
    import torch

    states = torch.from_numpy(run.stats.normalize_state(data.states[:200]))
    with torch.no_grad():
        chunks = run.model.eval().forward_chunk(states, torch.zeros(200, dtype=torch.int64))
    targets, mask = data.chunks(8)
    error = ((chunks.numpy() - targets[:200]) ** 2).mean(axis=2)[mask[:200]].mean()
    assert error < 0.05


def test_a_chunk_longer_than_the_data_looks_ahead_is_refused():
    data = _episodes(2, 10)
    with pytest.raises(ValueError, match="a chunk of 17 actions needs 17 steps ahead; data has 16"):
        data.chunks(17)
    flat = TrainingData(data.states, data.actions, data.task_index, data.weights, data.tasks, "d")
    with pytest.raises(ValueError, match="data has 1"):
        flat.chunks(8)


def _data(tasks: tuple[str, ...], task_of_steps: list[int], seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    n = len(task_of_steps)
    return TrainingData(
        states=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        task_index=np.asarray(task_of_steps, dtype=np.int64),
        weights=np.ones(n, np.float32),
        tasks=tasks,
        dataset_id="d",
    )


def test_fine_tuning_on_data_of_fewer_tasks_keeps_every_task_of_the_parent(tmp_path):
    import torch

    from policies.checkpoint import load_checkpoint

    config = TrainConfig(steps=1, batch_size=8)
    parent = Run.start(config, _data(("push", "reach"), [0, 1] * 20), parent=None)
    parent.save(tmp_path / "parent")
    # tonight the fleet worked reach only: the data's vocabulary is ("reach",)
    child = Run.start(config, _data(("reach",), [0] * 20, seed=1), parent=str(tmp_path / "parent"))
    assert child.policy_config.tasks == ("push", "reach")
    assert set(child.data.task_index.tolist()) == {1}  # reach keeps the parent's index
    parent_weights = load_checkpoint(tmp_path / "parent").model.state_dict()
    assert all(torch.equal(v, child.model.state_dict()[k]) for k, v in parent_weights.items())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        _data(("pick-place",), [0]).in_vocabulary(("push", "reach"))
