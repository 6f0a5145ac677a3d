"""Candidates registered in MLflow and the store, with a three-robot fleet to roll out to."""

from __future__ import annotations

from services.serving.assignments import register_robots
from services.store import session_scope
from tests.conftest import add_candidate


def register_candidates(settings, register, statuses, parents=None):
    """Candidates c0, c1, ... registered as versions 1, 2, ...; parents default to None."""
    with session_scope(settings.db_url) as session:
        register_robots(session=session, robot_ids=["r0", "r1", "r2"], tasks=["toy-reach"])
    parents = parents or [None] * len(statuses)
    for i, (status, parent) in enumerate(zip(statuses, parents, strict=True)):
        version = register(settings, candidate_id=f"c{i}").version
        add_candidate(settings.db_url, f"c{i}", version=version, status=status, parent=parent)
