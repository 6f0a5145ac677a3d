"""The rollout controller keeps each robot group's policy server on its robots' version
(against the stand-in API server: no real Kubernetes API server runs here)."""

from services.rollout.kube_sync import sync_policy_servers
from services.serving.assignments import assign, register_robots
from services.store import session_scope


def _assign(settings, robots, version):
    with session_scope(settings.db_url) as session:
        assign(session=session, robot_ids=robots, version=version, actor="t", reason="test")


def test_groups_follow_their_robots_and_a_split_group_stays_put(settings, backend):
    assert sync_policy_servers(settings) == {}  # no namespace set: embedded, nothing to do
    with session_scope(settings.db_url) as session:
        register_robots(session=session, robot_ids=["a0", "a1"], tasks=["t"], group="site-a")
        register_robots(session=session, robot_ids=["b0"], tasks=["t"], group="site-b")
    assert sync_policy_servers(settings, backend) == {}  # no robot runs anything yet
    _assign(settings, ["a0", "a1", "b0"], "1")
    assert sync_policy_servers(settings, backend) == {"site-a": "1", "site-b": "1"}
    assert backend.current_versions() == {"site-a": "1", "site-b": "1"}

    _assign(settings, ["a0"], "2")  # a canary inside site-a
    assert sync_policy_servers(settings, backend) == {"site-b": "1"}
    assert backend.current_versions() == {"site-a": "1", "site-b": "1"}
    _assign(settings, ["a1", "b0"], "2")  # the whole fleet
    sync_policy_servers(settings, backend)
    state = backend.group_state("site-a")
    assert backend.current_versions() == {"site-a": "2", "site-b": "2"}
    assert state.model_uri == "models:/flywheel-policy/2"
    sync_policy_servers(settings, backend)  # repeating changes nothing
    assert backend.group_state("site-a") == state
