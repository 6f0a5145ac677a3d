"""What a robot asks Flywheel: its assignment. In-process client used by the simulated fleet.

A real robot makes the same calls over the rollout API; the simulated fleet uses this
client so that it learns its policy exactly the way a robot does: by asking, then loading
the assigned model version from the registry.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.config import Settings
from services.rollout.assignments import assignment_of, register_robots
from services.rollout.ledger import champion_of
from services.store import session_scope


class LocalFleetClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def register(self, robot_ids: Sequence[str], tasks: Sequence[str]) -> None:
        """Register robots; a new robot starts on the champion, if there is one."""
        from services.rollout.assignments import assign

        with session_scope(self.settings.db_url) as session:
            robots = register_robots(session=session, robot_ids=robot_ids, tasks=tasks)
            session.flush()
            champion = champion_of(session=session)
            fresh = [r.id for r in robots if r.policy_version is None]
            if champion and fresh:
                assign(
                    session=session,
                    robot_ids=fresh,
                    version=champion,
                    actor="fleet",
                    reason="new robot starts on the champion",
                )

    def assignment(self, robot_id: str):
        from services.registry.mlflow_registry import load_policy
        from sim.fleet import Assignment

        with session_scope(self.settings.db_url) as session:
            version = assignment_of(session=session, robot_id=robot_id)
        if version is None:
            return Assignment(version=None, policy=None)
        return Assignment(version=version, policy=load_policy(self.settings, version).act)
