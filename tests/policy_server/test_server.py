"""The policy server as robots meet it: who may connect, what a wrong observation gets, and
a model swap in the middle of a robot's stream."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from services.api.lockout import Lockout
from services.policy_server import codec
from services.serving.assignments import assign
from services.serving.credentials import revoke_credential
from services.store import session_scope

STATE = np.array([0.1, -0.2, 0.3, 0.0], np.float32)


def _connect(served, key: str | None, path: str = "/", scheme: str = "Api-Key"):
    headers = {"Authorization": f"{scheme} {key}"} if key else None
    ws = connect(served.ws + path, additional_headers=headers, compression=None)
    return ws, codec.unpackb(ws.recv())


def _infer(ws, observation) -> dict | str:
    ws.send(codec.packb(observation))
    reply = ws.recv()
    return reply if isinstance(reply, str) else codec.unpackb(reply)


def _refused(served, key, path="/", scheme="Api-Key") -> int:
    with pytest.raises(InvalidStatus) as refused:
        _connect(served, key, path, scheme)
    return refused.value.response.status_code


def test_a_robot_gets_its_assigned_model_with_either_form_of_its_credential(served):
    ws, metadata = _connect(served, served.keys["r0"])
    with ws:
        assert metadata["robot_id"] == "r0" and metadata["policy_version"] == "1"
        assert (metadata["state_dim"], metadata["action_dim"], metadata["chunk_size"]) == (4, 2, 1)
        reply = _infer(ws, {"observation.state": STATE, "task": "toy-push"})
    assert reply["policy_version"] == "1"
    assert reply["actions"].shape == (1, 2) and reply["actions"].dtype == np.float32
    ws, metadata = _connect(served, served.keys["r0"], "/robots/r0", scheme="Bearer")
    with ws:
        again = _infer(ws, {"state": STATE, "prompt": "toy-push"})
    np.testing.assert_array_equal(again["actions"], reply["actions"])  # the same model


def test_missing_wrong_revoked_and_other_robots_credentials_are_refused(served):
    assert _refused(served, None) == 401
    assert _refused(served, "fwr_guess") == 401
    assert _refused(served, served.keys["r0"], scheme="Basic") == 401
    assert _refused(served, served.keys["r1"], "/robots/r0") == 403
    response = httpx.post(
        f"{served.http}/robots/r0/infer",
        json={"state": STATE.tolist(), "task": "toy-reach"},
        headers={"Authorization": f"Api-Key {served.keys['r1']}"},
    )
    assert response.status_code == 403 and "'r1'" in response.json()["detail"]
    ws, _ = _connect(served, served.keys["r3"])  # r3 connected before its revocation...
    with session_scope(served.settings.db_url, write=True) as session:
        revoke_credential(session=session, robot_id="r3", actor="t")
    assert _refused(served, served.keys["r3"]) == 401
    with pytest.raises(ConnectionClosed) as closed:  # ...is disconnected at the next refresh
        for _ in range(100_000):
            _infer(ws, {"state": STATE, "task": "toy-reach"})
    assert closed.value.rcvd.code == 1008


def test_repeated_bad_credentials_lock_the_client_out_with_retry_after(served):
    app = served.app
    kept, app.state.lockout = app.state.lockout, Lockout(failures=2, window_s=60, lockout_s=60)
    try:
        assert [_refused(served, "fwr_guess") for _ in range(2)] == [401, 401]
        with pytest.raises(InvalidStatus) as locked:  # even the right credential, for now
            _connect(served, served.keys["r0"])
        assert locked.value.response.status_code == 429
        assert int(locked.value.response.headers["Retry-After"]) == 60
    finally:
        app.state.lockout = kept


@pytest.mark.parametrize(
    ("observation", "says"),
    [
        ({"observation.state": STATE[:3], "task": "toy-reach"}, "vector of 4 numbers"),
        ({"state": STATE}, "missing 'task'"),
        ({"state": STATE, "task": "toy-fly"}, "not one this policy serves"),
        ({"state": STATE, "task": "toy-reach", "sate": STATE}, "unknown observation keys"),
        (
            {"state": STATE, "task": "toy-reach", "images": {"top": np.zeros((4, 4, 3), np.uint8)}},
            "takes no camera images",
        ),
        ({"state": np.array([np.nan, 0, 0, 0], np.float32), "task": "toy-reach"}, "NaN"),
        ([1, 2, 3], "a map of keys"),
    ],
)
def test_a_wrong_observation_is_answered_and_the_connection_stays_usable(served, observation, says):
    ws, _ = _connect(served, served.keys["r0"])
    with ws:
        error = _infer(ws, observation)
        assert isinstance(error, str) and says in error
        assert _infer(ws, {"state": STATE, "task": "toy-reach"})["actions"].shape == (1, 2)


def test_undecodable_frames_are_refused_on_the_socket_and_over_http(served):
    ws, _ = _connect(served, served.keys["r0"])
    with ws:
        ws.send(b"\xc1 not msgpack")
        assert "not a msgpack message" in ws.recv()
        ws.send(
            b"".join(
                [
                    b"\x81\xa1x",
                    codec.packb(
                        {b"__ndarray__": True, b"data": b"12345678", b"dtype": "|O", b"shape": [1]}
                    ),
                ]
            )
        )
        assert "not numeric" in ws.recv()  # an object array would be pointers: never built
        ws.send("a text frame")
        assert "binary msgpack" in ws.recv()
        assert _infer(ws, {"state": STATE, "task": "toy-reach"})["actions"].shape == (1, 2)
    headers = {"Authorization": f"Bearer {served.keys['r0']}"}
    bad = httpx.post(f"{served.http}/infer", json={"state": [1, 2]}, headers=headers)
    assert bad.status_code == 422 and "vector of 4 numbers" in bad.json()["detail"]
    good = httpx.post(
        f"{served.http}/infer",
        content=codec.packb({"state": STATE, "task": "toy-reach"}),
        headers=headers | {"Content-Type": "application/msgpack"},
    )
    assert codec.unpackb(good.content)["actions"].shape == (1, 2)
    health = httpx.get(f"{served.http}/health")
    assert health.status_code == 200 and "1" in health.json()["versions"]


def test_a_swap_during_a_stream_of_requests_drops_none(served):
    """r1 streams observations while the rollout moves it to version 2 (ACT, chunks of 4):
    every request is answered, first by version 1 and then, after the warm-up, by 2."""
    replies: list = []
    switched = threading.Event()

    def stream():
        ws, _ = _connect(served, served.keys["r1"])
        with ws:
            for _ in range(100_000):  # until well past the swap
                replies.append(_infer(ws, {"state": STATE, "task": "toy-reach"}))
                if isinstance(replies[-1], dict) and replies[-1]["policy_version"] == "2":
                    if switched.is_set() and len(replies) > switched.count + 50:
                        return
                    if not switched.is_set():
                        switched.count = len(replies)
                        switched.set()

    robot = threading.Thread(target=stream)
    robot.start()
    while not replies and robot.is_alive():
        robot.join(0.01)
    with session_scope(served.settings.db_url, write=True) as session:
        assign(session=session, robot_ids=["r1"], version="2", actor="t", reason="canary")
    robot.join(120)
    assert not robot.is_alive()
    assert all(isinstance(r, dict) for r in replies), [r for r in replies if isinstance(r, str)]
    versions = [r["policy_version"] for r in replies]
    first_v2 = versions.index("2")
    assert first_v2 > 0 and set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}
    assert {r["actions"].shape for r in replies[first_v2:]} == {(4, 2)}  # the chunk travels


def test_a_downloaded_model_whose_files_differ_from_the_registered_ones_is_not_served(served):
    from services.policy_server.models import ModelUnavailable, load_served_model
    from services.registry.mlflow_registry import policy_checkpoint

    meta = policy_checkpoint(served.settings, "1") / "meta.json"
    kept = meta.read_bytes()
    meta.write_bytes(kept + b" ")
    try:
        with pytest.raises(ModelUnavailable, match="is not the registered"):
            load_served_model(served.settings, "1", warmup_calls=1)
    finally:
        meta.write_bytes(kept)
    assert load_served_model(served.settings, "1", warmup_calls=1).checksum_verified


def test_a_vision_policys_robot_sends_its_camera_frames_in_either_form(served):
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ws, metadata = _connect(served, served.keys["r4"])
    with ws:
        assert metadata["policy_version"] == "3" and metadata["cameras"] == ["front"]
        nested = _infer(ws, {"state": STATE, "task": "toy-reach", "images": {"front": frame}})
        flat = _infer(ws, {"state": STATE, "task": "toy-reach", "observation.images.front": frame})
        np.testing.assert_array_equal(nested["actions"], flat["actions"])
        assert nested["actions"].shape == (1, 2)
        assert "missing ['front']" in _infer(ws, {"state": STATE, "task": "toy-reach"})
        wrong = {"state": STATE, "task": "toy-reach", "images": {"front": frame / 255.0}}
        assert "uint8" in _infer(ws, wrong)  # the policy's own check of its frames
        dark = _infer(ws, {"state": STATE, "task": "toy-reach", "images": {"front": 0 * frame}})
    assert not np.array_equal(dark["actions"], nested["actions"])  # the frames reach the model


def _shadow_state(served, running: bool) -> dict | None:
    """Wait (bounded) until the server's refresh has started or stopped the shadow."""
    for _ in range(200):
        shadow = httpx.get(served.http + "/health").json()["shadow"]
        if (shadow is not None) == running:
            return shadow
        threading.Event().wait(0.05)
    raise AssertionError(f"the shadow did not {'start' if running else 'stop'} within 10 s")


def test_a_shadow_run_logs_the_candidates_actions_beside_the_served_ones(served):
    from policies.checkpoint import load_checkpoint
    from services.registry.mlflow_registry import policy_checkpoint
    from services.shadow.log import read_counts, read_shadow_log
    from services.shadow.runs import end_shadow, running_shadow, start_shadow
    from services.store.models import Candidate, Dataset

    settings = served.settings
    with session_scope(settings.db_url, write=True) as session:
        session.add(Dataset(id="d-shadow", scheme="uniform", path="m", n_episodes=1, n_steps=1))
        session.flush()
        session.add(
            Candidate(
                id="c-act",
                model_name="m",
                model_version="2",
                dataset_id="d-shadow",
                parent_version="1",
                policy="act",
            )
        )
        session.flush()
        start_shadow(session=session, candidate_id="c-act", actor="t")  # version 2, ACT
    try:
        assert _shadow_state(served, running=True)["version"] == "2"
        ws, _ = _connect(served, served.keys["r2"])  # on the champion, version 1
        states = [STATE + i for i in range(5)]
        with ws:
            replies = [
                _infer(ws, {"state": s, "task": "toy-push", "episode_id": "ep-1", "step": i})
                for i, s in enumerate(states)
            ]
            unplaced = _infer(ws, {"state": STATE, "task": "toy-push"})  # no episode, no step
            refused = _infer(ws, {"state": STATE, "task": "toy-push", "step": -1})
        # The robot runs its own version; the shadow's chunk of 4 never reaches it.
        assert [r["policy_version"] for r in replies] == ["1"] * 5
        assert all(r["actions"].shape == (1, 2) for r in [*replies, unplaced])
        assert refused.startswith("observation refused") and "'step'" in refused
    finally:
        with session_scope(settings.db_url, write=True) as session:
            end_shadow(session=session, run=running_shadow(session=session), actor="t", reason="t")
    _shadow_state(served, running=False)  # closed: its log written out
    log = read_shadow_log(settings.shadow_log, "2").sort_values("step")
    assert log["step"].tolist() == [0, 1, 2, 3, 4]
    assert set(log["robot_id"]) == {"r2"} and set(log["served_version"]) == {"1"}
    served_actions = np.stack(log["served_action"].to_numpy())
    np.testing.assert_array_equal(served_actions, np.stack([r["actions"][0] for r in replies]))
    act = load_checkpoint(policy_checkpoint(settings, "2"))
    expected = np.stack([act.act_chunk(s, "toy-push", None)[0] for s in states])
    np.testing.assert_allclose(np.stack(log["shadow_action"].to_numpy()), expected, atol=1e-6)
    counts = read_counts(settings.shadow_log, "2")
    assert counts["offered"] == 5 and counts["logged"] == 5 and counts["unattributed"] == 1
    assert counts["dropped"] == 0 and counts["failed"] == 0
