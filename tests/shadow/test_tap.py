"""The shadow's tap: it never makes the serving path wait, and counts what it could not keep."""

from __future__ import annotations

import threading

import numpy as np

from services.shadow.log import read_counts, read_shadow_log
from services.shadow.tap import ShadowStep, ShadowTap


def _step(i: int, episode: str = "ep") -> ShadowStep:
    state = np.full(3, i, np.float32)
    return ShadowStep("r0", episode, i, "t", state, None, "1", np.zeros(2, np.float32))


def test_a_shadow_that_cannot_keep_up_drops_and_counts_steps_instead_of_queueing(tmp_path):
    started, release = threading.Event(), threading.Event()

    def slow(state, task, images):
        started.set()
        release.wait(30)
        return state[None, :2] * 2

    tap = ShadowTap("2", slow, tmp_path, queue_steps=2)
    assert tap.offer(_step(0))
    assert started.wait(30)  # the shadow is busy with step 0
    taken = [tap.offer(_step(i)) for i in range(1, 5)]
    assert taken == [True, True, False, False]  # two fit the queue; the rest are dropped
    release.set()
    counts = tap.close()
    assert counts == {"offered": 5, "dropped": 2, "logged": 3, "failed": 0, "unattributed": 0}
    log = read_shadow_log(tmp_path, "2").sort_values("step")
    assert log["step"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(np.stack(log["shadow_action"].to_numpy())[:, 0], [0, 2, 4])
    assert read_counts(tmp_path, "2")["dropped"] == 2


def test_a_step_the_shadow_cannot_act_on_is_counted_and_the_rest_logged(tmp_path):
    def picky(state, task, images):
        if state[0] == 1:
            raise ValueError("task unknown to the shadow")
        return np.ones((4, 2), np.float32)  # a chunk: the first action is logged

    tap = ShadowTap("2", picky, tmp_path)
    for i in range(3):
        tap.offer(_step(i, episode="a"))
    tap.offer(_step(0, episode="b"))  # the robot's next episode: episode a is written out
    counts = tap.close()
    assert (counts["logged"], counts["failed"]) == (3, 1)
    log = read_shadow_log(tmp_path, "2")
    assert sorted(zip(log["episode_uuid"], log["step"], strict=True)) == [
        ("a", 0),
        ("a", 2),
        ("b", 0),
    ]
    assert len(list((tmp_path / "2" / "r0").glob("a-*.parquet"))) == 1
