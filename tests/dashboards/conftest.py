"""A review store with a fleet history: two nights of uploads (one log refused), a champion,
a rollout in progress with watched windows, and the review store of tests/api."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select

from services.episodes.model import InterventionSpan
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.registry.ledger import promote
from services.rollout.plan import RolloutPlan
from services.store import session_scope
from services.store.models import (
    Candidate,
    DatasetEpisode,
    Episode,
    Heartbeat,
    NightlyRun,
    Robot,
    Rollout,
)
from tests.api.conftest import seed_review_store
from tests.conftest import add_candidate
from tests.ingest.logs import recording

ROBOTS = ["robot-00", "robot-01", "robot-02", "robot-03"]
NIGHTS = 2
EPISODES_PER_NIGHT = 4  # deployments that pass validation, per night
TAKEOVER = (20, 32)  # the operator's steps in every episode with a takeover


def _upload(folder, night: int, robot: str, *, takeover: bool, outcome: str) -> None:
    n = 60
    sources = ["policy"] * n
    spans = []
    if takeover:
        sources[TAKEOVER[0] : TAKEOVER[1]] = ["operator"] * (TAKEOVER[1] - TAKEOVER[0])
        spans = [InterventionSpan(*TAKEOVER, kind="takeover", operator_id="op-1")]
    t = np.linspace(0, 1, n)
    states = np.c_[np.sin(3 * t + night), np.cos(2 * t), t, 1 - t]
    rec = recording(
        n=n,
        robot_id=robot,
        task="pick-place",
        policy_version=str(night + 1),
        started_at=datetime(2026, 1, night, 9, tzinfo=UTC),
        control_hz=0.2,  # 5 minutes per episode: a plausible interventions-per-hour figure
        states=states,
        actions=np.c_[np.gradient(states[:, 0]), np.gradient(states[:, 1])],
        control_source=sources,
        reasons=[None] * n,
        outcome=outcome,
        interventions=spans,
    )
    write_episode_mcap(rec, folder / f"{robot}-{rec.episode_uuid}.mcap")


def seed_fleet_store(settings, tmp_path) -> dict[str, str]:
    """seed_review_store, then the fleet's history; returns an API token per role."""
    tokens = seed_review_store(settings)
    url = settings.db_url
    with session_scope(url) as session:
        promote(
            session=session,
            expected=None,
            new="2",
            candidate_id="c2",
            actor="seed",
            reason="first policy",
        )
    add_candidate(url, "c5", version="5", status="approved", parent="2")
    for night in range(1, NIGHTS + 1):
        folder = tmp_path / f"uploads-{night}"
        folder.mkdir()
        for i, robot in enumerate(ROBOTS[:EPISODES_PER_NIGHT]):
            # fewer takeovers on the second night: the flywheel at work
            _upload(
                folder, night, robot, takeover=i < 3 - night, outcome="success" if i else "failure"
            )
        (folder / "robot-03-truncated.mcap").write_bytes(b"\x89MCAP0\r\n not a whole log")
        summary = ingest_logs(settings, source=str(folder))
        with session_scope(url) as session:
            session.add(
                NightlyRun(
                    flow_run_id=f"flow-{night}",
                    started_at=datetime(2026, 1, night, 2, tzinfo=UTC),
                    ingest_run_id=summary.run_id,
                    dataset_id="d1",
                    candidate_id=f"c{night + 1}",
                    champion_before=None if night == 1 else "2",
                    champion_after="2",
                    state="completed",
                    summary={"outcome": "seeded"},
                )
            )
    with session_scope(url) as session:
        for episode_id in session.scalars(select(Episode.id).where(Episode.status == "ok")):
            session.add(DatasetEpisode(dataset_id="d1", episode_id=episode_id, weight_sum=1.0))
        c3 = session.get(Candidate, "c3")
        c3.mlflow_run_id, c3.flow_run_id, c3.train_seconds = "run-abc123", "flow-2", 42.0
        _rollout_in_progress(session, settings)
    return tokens


def _rollout_in_progress(session, settings) -> None:
    """Candidate 5 at the canary stage after two windows, as the controller leaves it."""
    for robot in ROBOTS:
        if session.get(Robot, robot) is None:
            session.add(Robot(id=robot, tasks=["pick-place"]))
    session.flush()
    stages = RolloutPlan.from_settings(settings).stages("c5", ROBOTS)
    start = datetime(2026, 1, 3, 9, tzinfo=UTC)
    windows = [
        {
            "at": (start + timedelta(hours=i)).isoformat(),
            "treatment": {"episodes": 4, "failures": 1, "interventions": treatment, "hours": 0.5},
            "control": {"episodes": 12, "failures": 5, "interventions": control, "hours": 1.5},
            "llr": {"failures": -0.4 * (i + 1), "interventions": -0.3 * (i + 1)},
            "decision": "continue",
        }
        for i, (treatment, control) in enumerate(((1, 3), (2, 5)))
    ]
    canary = stages[0].with_(windows=tuple(windows), episodes=8, llr=dict(windows[-1]["llr"]))
    stages = [canary.to_json(), *(s.to_json() for s in stages[1:])]
    session.add(Rollout(candidate_id="c5", from_version="2", to_version="5", stages=stages))
    for robot in ROBOTS:
        version = "5" if robot in canary.robots else "2"
        session.add(
            Heartbeat(
                robot_id=robot,
                policy_version=version,
                episodes=4,
                failures=1,
                interventions=1,
                active_seconds=1200.0,
            )
        )
