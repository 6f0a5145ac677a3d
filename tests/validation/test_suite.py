"""The episodes suite: one Great Expectations run per batch, failures mapped to their episodes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from services.ingest.formats.json_mcap import read_episode_mcap
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.validation.embodiment import Embodiment
from services.validation.suite import episode_facts, validate_episodes
from tests.ingest.logs import recording


def episode(tmp_path, name, **changes):
    return read_episode_mcap(write_episode_mcap(recording(**changes), tmp_path / f"{name}.mcap"))


def test_only_the_bad_episodes_of_a_batch_fail_each_with_its_reasons(tmp_path):
    good = episode(tmp_path, "good")
    nan = episode(tmp_path, "nan")
    nan.states[[3, 4, 9]] = np.nan
    nan.actions[7, 1] = np.inf
    backwards = episode(tmp_path, "backwards")
    backwards.timestamps[17] = backwards.timestamps[15]
    clock = replace(good, timestamps=good.timestamps + np.r_[np.zeros(10), np.full(10, 3600.0)])
    short = episode(
        tmp_path, "short", n=1, control_source=["policy"], reasons=[None], interventions=[]
    )
    ghost = replace(good, control_source=["ghost"] + good.control_source[1:])
    batch = [
        ("good", good),
        ("nan", nan),
        ("backwards", backwards),
        ("clock", clock),
        ("short", short),
        ("ghost", ghost),
    ]

    report = validate_episodes(episode_facts(batch))

    assert not report.success and "good" not in report.failures
    assert report.failures["nan"] == [
        "observation.state has NaN/inf at 3 steps (3, 4, 9)",
        "action has NaN/inf at step 7",
    ]
    assert report.failures["backwards"] == ["timestamps go backwards or repeat at step 17"]
    assert report.failures["clock"] == ["clock jumps over 10 s between steps at step 10"]
    assert report.failures["short"] == ["too short: 1 steps, fewer than 2"]
    assert report.failures["ghost"] == ["unknown control source 'ghost' at step 0"]
    assert report.reason("nan").startswith("observation.state has NaN/inf")
    result = json.loads(json.dumps(report.result))
    assert result["frames"] == 20 * 5 + 1 and result["episodes"] == 6
    [suite] = result["suites"]
    by_type = {(e["type"], e["kwargs"].get("column")): e for e in suite["expectations"]}
    assert by_type[("expect_column_values_to_be_between", "state_nonfinite_steps")]["episodes"] == [
        "nan"
    ]


def test_sizes_are_expected_per_task(tmp_path):
    reach = [(f"r{i}", episode(tmp_path, f"r{i}")) for i in range(3)]
    push = [(f"p{i}", episode(tmp_path, f"p{i}", task="push", state_dim=6)) for i in range(2)]
    odd = ("odd", episode(tmp_path, "odd", action_dim=3))
    facts = episode_facts([*reach, *push, odd])

    report = validate_episodes(facts)
    assert report.failures == {"odd": ["action has 3 values, expected 2 for task toy-reach"]}

    store = validate_episodes(facts, dims={"toy-reach": (4, 3), "push": (6, 2)})
    assert set(store.failures) == {"r0", "r1", "r2"}
    assert store.result["expected_dims"] == {"toy-reach": [4, 3], "push": [6, 2]}


def test_a_clean_batch_passes_and_an_empty_one_needs_no_suite(tmp_path):
    report = validate_episodes(episode_facts([("a", episode(tmp_path, "a"))]), min_steps=20)
    assert report.success and report.result["success"] is True
    assert validate_episodes(episode_facts([])).success
    assert not validate_episodes(
        episode_facts([("a", episode(tmp_path, "a"))]), min_steps=21
    ).success


def test_each_embodiment_has_its_own_suite(tmp_path):
    arm = Embodiment(
        name="arm",
        robots=("arm-*",),
        state_dim=4,
        action_dim=2,
        state_range=((-3, -3, -3, -3), (3, 3, 3, 3)),
        action_range=(-0.5, 0.5),
        control_sources=("policy",),
        min_steps=10,
    )
    fine = episode(tmp_path, "fine", robot_id="arm-1", control_source=["policy"] * 20)
    fine.states[:] = 0.0
    fine.actions[:] = 0.1
    wild = replace(fine, states=fine.states.copy(), actions=fine.actions.copy())
    wild.states[4, 2] = 7.0  # past one joint's limit
    wild.actions[[1, 2], 0] = -0.9
    teleop = replace(fine, control_source=["policy"] * 10 + ["operator"] * 10)
    short = replace(
        fine,
        states=fine.states[:5],
        actions=fine.actions[:5],
        timestamps=fine.timestamps[:5],
        control_source=["policy"] * 5,
        reasons=[None] * 5,
    )
    other = episode(tmp_path, "other", robot_id="cart-1")  # no embodiment: inferred, as before
    batch = [("fine", fine), ("wild", wild), ("teleop", teleop), ("short", short), ("other", other)]

    report = validate_episodes(episode_facts(batch, [arm]), embodiments=[arm])

    assert set(report.failures) == {"wild", "teleop", "short"}
    assert report.failures["wild"] == [
        "observation.state outside its per-dimension limits of embodiment arm at step 4",
        "action outside [-0.5, 0.5] of embodiment arm at 2 steps (1, 2)",
    ]
    assert report.failures["teleop"] == [
        "control source 'operator' not allowed for embodiment arm "
        "at 10 steps (10, 11, 12, 13, 14, ...)"
    ]
    assert report.failures["short"] == ["too short: 5 steps, fewer than 10"]
    suites = {s["embodiment"]: s for s in report.result["suites"]}
    assert set(suites) == {"arm", "inferred"} and suites["inferred"]["success"]
    assert suites["arm"]["suite"] == "episodes-arm" and suites["arm"]["episodes"] == 4


def test_an_embodiment_sets_the_sizes_it_expects(tmp_path):
    arm = Embodiment(name="arm", state_dim=5, action_dim=2)
    report = validate_episodes(
        episode_facts([("a", episode(tmp_path, "a"))], [arm]), embodiments=[arm]
    )
    assert report.failures == {
        "a": ["observation.state has 4 values, expected 5 for task toy-reach"]
    }
