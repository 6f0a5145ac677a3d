"""Two Ray nodes on this machine, as a cluster of two would run the night's Ray work.

A head (`ray start --head`, as `flywheel up` starts it) and a second node that joins it with
`ray start --address`, with resources of its own. Closed-loop evaluation shares its episodes
out over every CPU of the cluster: tasks land on both nodes; when the second node dies in the
middle, Ray runs its tasks again on the head and every episode is stored exactly once.
(Both nodes share this machine's disk: what a cluster without a shared disk needs is the
object store of issue 22, not yet built.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.evaluation.closed_loop import SUITE, evaluate_version
from services.runtime.ray_driver import shutdown_ray
from services.runtime.ray_head import free_port, start_head, stop_head
from services.store import session_scope
from services.store.models import EvaluationEpisode

pytestmark = [pytest.mark.slow, pytest.mark.fault]

SECOND = "second-node"
# The ports a joining node listens on besides its raylet's: free ones, as the head's are.
NODE_PORTS = (
    "metrics-export-port",
    "runtime-env-agent-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
)


def _join(address: str, log: Path) -> subprocess.Popen:
    """A second node joining the head at ``address`` with 2 CPUs, in a process group."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    argv = [
        str(bin_dir / "ray"),
        "start",
        f"--address={address}",
        "--block",
        "--num-cpus=2",
        f'--resources={{"{SECOND}": 2}}',
        "--disable-usage-stats",
        *(f"--{name}={free_port()}" for name in NODE_PORTS),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture
def cluster(tmp_path, settings, monkeypatch):
    """(head, second node's process, the second node's Ray id) with this test's driver joined."""
    import ray

    shutdown_ray()  # this worker's shared local Ray, if an earlier test started one
    head = start_head(tmp_path / "head", tmp_path / "head.log")
    node = _join(head.address, tmp_path / "node.log")
    try:
        monkeypatch.setenv("FLYWHEEL_RAY_ADDRESS", head.address)
        ray.init(address=head.address, log_to_driver=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            joined = [n for n in ray.nodes() if n["Alive"] and SECOND in n["Resources"]]
            if joined:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the second node did not join: {(tmp_path / 'node.log').read_text()}")
        yield head, node, joined[0]["NodeID"]
    finally:
        shutdown_ray()
        with_group = node.pid
        if node.poll() is None:
            os.killpg(with_group, signal.SIGKILL)
        node.wait(timeout=30)
        stop_head(head.pid, timeout_s=5)


def _tasks(head, name: str) -> list:
    from ray.util.state import list_tasks

    return list_tasks(address=head.job_address, filters=[("name", "=", name)], limit=1000)


def test_evaluation_lands_on_both_nodes_and_survives_losing_one(cluster, settings, toy_checkpoint):
    from services.config import Settings

    head, node, second_id = cluster
    settings = Settings()  # with FLYWHEEL_RAY_ADDRESS: the cluster's head
    seeds = range(40)
    done: dict = {}
    evaluation = threading.Thread(
        target=lambda: done.update(
            evaluate_version(settings, "7", toy_checkpoint, ["toy-reach"], seeds)
        )
    )
    evaluation.start()
    # Kill the second node while one of its shares is running there.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [
            t
            for t in _tasks(head, "_run_episodes")
            if t.node_id == second_id and t.state == "RUNNING"
        ]
        if running:
            break
        time.sleep(0.2)
    else:
        pytest.fail("no evaluation share ran on the second node")
    os.killpg(node.pid, signal.SIGKILL)
    evaluation.join(timeout=300)
    assert not evaluation.is_alive()

    assert sorted(done["toy-reach"]) == list(seeds)
    attempts = _tasks(head, "_run_episodes")
    ran_on = {t.node_id for t in attempts if t.node_id is not None}  # None: not placed yet
    assert second_id in ran_on and len(ran_on) == 2  # both nodes ran shares
    with session_scope(settings.db_url) as session:
        stored = session.execute(
            select(EvaluationEpisode.seed, func.count())
            .where(EvaluationEpisode.model_version == "7", EvaluationEpisode.suite == SUITE)
            .group_by(EvaluationEpisode.seed)
        ).all()
    assert sorted(seed for seed, _ in stored) == list(seeds)
    assert {count for _, count in stored} == {1}  # each episode exactly once
