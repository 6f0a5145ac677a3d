"""A review store with candidates, evaluations, a user per role and a robot; enrolled robots."""

import numpy as np

from services.approval.users import add_user
from services.evaluation.closed_loop import SUITE, compare, store_evaluations
from services.evaluation.gate import judge, record_verdict
from services.evaluation.trajectories import trajectory_path, write_trajectory
from services.serving.assignments import register_robots
from services.serving.credentials import enroll_robot
from services.store import session_scope
from services.store.models import EvaluationEpisode
from tests.conftest import add_candidate

ROLES = ("engineer", "fleet-manager", "admin")


def _outcomes(successes: int, n: int = 40) -> dict[int, bool]:
    return {seed: seed < successes for seed in range(n)}


def seed_review_store(settings) -> dict[str, str]:
    """Candidate 2 (champion), candidate 3 passed against it, candidate 4 failed; returns an
    API token per role."""
    url = settings.db_url
    add_candidate(url, "c2", version="2", status="deployed")
    add_candidate(url, "c3", version="3", status="registered", parent="2")
    add_candidate(url, "c4", version="4", status="registered", parent="2")
    for cid, k in (("c3", 30), ("c4", 5)):
        evaluations = compare({"pick-place": _outcomes(k)}, {"pick-place": _outcomes(12)})
        offline = {
            "pick-place": {
                "held_out_episodes": 6,
                "operator_steps": 120,
                "candidate_action_mse": 0.02 if cid == "c3" else 0.09,
                "champion_action_mse": 0.05,
            }
        }
        store_evaluations(settings, cid, "2", evaluations, offline=offline)
        record_verdict(url, cid, judge(evaluations))
    with session_scope(url) as session:
        for version, k in (("2", 12), ("3", 30)):
            for seed, ok in _outcomes(k).items():
                session.add(
                    EvaluationEpisode(
                        model_version=version,
                        task="pick-place",
                        seed=seed,
                        suite=SUITE,
                        success=ok,
                        steps=50 if ok else 200,
                        final_reward=1.0 if ok else 0.1,
                    )
                )
        for version in ("2", "3"):  # a failure of 3 that 2 also failed, both kept
            path = trajectory_path(settings, SUITE, version, "pick-place", 35)
            steps = np.arange(6, dtype=np.float32)
            write_trajectory(path, np.c_[steps, -steps], np.c_[steps / 10], steps / 100)
        tokens = {role: add_user(session=session, name=f"u-{role}", role=role) for role in ROLES}
        # a robot with no assignment yet (an assigned one needs a model in the registry)
        register_robots(session=session, robot_ids=["robot-00"], tasks=["pick-place"])
    return tokens


def enroll_robots(settings, robot_ids) -> dict[str, str]:
    """Enroll robots (those registered already keep their assignment); their credentials."""
    with session_scope(settings.db_url, write=True) as session:
        return {
            robot_id: enroll_robot(
                session=session,
                robot_id=robot_id,
                tasks=["pick-place"],
                group="default",
                actor="u-admin",
            )
            for robot_id in robot_ids
        }
