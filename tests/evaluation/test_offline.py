"""Offline evaluation: action error against the operator on held-out takeovers only."""

from pathlib import Path

import numpy as np
import pytest

from policies.checkpoint import load_checkpoint
from services.curation.manifest import held_out_episodes
from services.evaluation.offline import action_errors
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.logs import recording


def test_action_error_is_measured_on_operator_steps_of_held_out_episodes(settings, toy_checkpoint):
    held = settings.updated(curation={"holdout_share": 0.5})
    recordings = {}
    for i in range(10):
        r = recording(n=20 + i)
        recordings[r.episode_uuid] = r
        write_episode_mcap(r, Path(held.fleet_log_uri) / f"deploy-{i}.mcap")
    ingest_logs(held)
    assert action_errors({"candidate": toy_checkpoint}, settings) == {}  # nothing held out

    metrics = action_errors({"candidate": toy_checkpoint, "champion": toy_checkpoint}, held)
    [task] = metrics
    held_out = held_out_episodes(held)
    # every test recording has one takeover of 4 operator steps (5..8)
    assert metrics[task]["held_out_episodes"] == len(held_out) > 0
    assert metrics[task]["operator_steps"] == 4 * len(held_out)

    policy = load_checkpoint(toy_checkpoint)
    states, actions = [], []
    for episode in held_out:
        r = next(r for r in recordings.values() if len(r.states) == episode.steps)
        states.append(r.states[5:9])
        actions.append(r.actions[5:9])
    states, actions = np.concatenate(states), np.concatenate(actions)
    predicted = policy.act_batch(states.astype(np.float32), np.zeros(len(states), int))
    expected = float(np.mean((predicted - actions.astype(np.float32)) ** 2))
    assert metrics[task]["candidate_action_mse"] == pytest.approx(expected, rel=1e-5)
    assert metrics[task]["champion_action_mse"] == metrics[task]["candidate_action_mse"]
