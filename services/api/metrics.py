"""GET /metrics: the flywheel's figures in Prometheus text format, read from the store at
scrape time, so every API replica reports the same numbers and nothing is lost on restart.

The Grafana dashboard in ``dashboards/grafana/`` is built on these names; the tests check
that every panel's query names one of them.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from services.api.deps import SettingsDep
from services.config import Settings
from services.nights import fleet_figures
from services.registry.ledger import champion_of
from services.rollout.controller import in_progress
from services.store import session_scope
from services.store.models import (
    Candidate,
    Episode,
    Evaluation,
    Heartbeat,
    NightlyRun,
    Rollout,
)

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(settings: SettingsDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class StoreCollector(Collector):
    """Counts and latest figures from the Flywheel store, one query each."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.settings.db_url) as session:
            yield from _episodes(session)
            yield from _training(session)
            yield from _evaluation(session)
            yield from _rollouts(session)
            yield from _heartbeats(session)
            last_ingest = yield from _nights(session)
        yield from _last_night_fleet(self.settings, last_ingest)


def _episodes(session) -> Iterator[Metric]:
    ingested = CounterMetricFamily(
        "flywheel_episodes_ingested",
        "Episodes in the store that passed validation.",
        labels=["kind"],
    )
    quarantined = CounterMetricFamily(
        "flywheel_episodes_quarantined", "Episode logs refused by validation.", labels=["kind"]
    )
    interventions = CounterMetricFamily(
        "flywheel_fleet_interventions", "Operator interventions in ingested fleet deployments."
    )
    seconds = CounterMetricFamily(
        "flywheel_fleet_robot_seconds", "Robot time in ingested fleet deployments (seconds)."
    )
    rows = session.execute(
        select(
            Episode.status,
            Episode.kind,
            func.count(),
            func.coalesce(func.sum(Episode.n_interventions), 0),
            func.coalesce(func.sum(Episode.duration_s), 0.0),
        ).group_by(Episode.status, Episode.kind)
    ).all()
    total_interventions, total_seconds = 0, 0.0
    for status, kind, count, n_interventions, duration in rows:
        family = ingested if status == "ok" else quarantined
        family.add_metric([kind or "unknown"], count)
        if status == "ok" and kind == "deployment":
            total_interventions += n_interventions
            total_seconds += duration
    interventions.add_metric([], total_interventions)
    seconds.add_metric([], total_seconds)
    yield from (ingested, quarantined, interventions, seconds)


def _training(session) -> Iterator[Metric]:
    count, seconds = session.execute(
        select(func.count(), func.coalesce(func.sum(Candidate.train_seconds), 0.0)).where(
            Candidate.train_seconds.is_not(None)
        )
    ).one()
    yield CounterMetricFamily(
        "flywheel_candidates_trained", "Candidates trained (with a recorded time).", value=count
    )
    yield CounterMetricFamily(
        "flywheel_training_seconds", "Wall time spent training candidates.", value=seconds
    )
    last = GaugeMetricFamily(
        "flywheel_last_training_seconds",
        "Training time of the newest trained candidate.",
        labels=["model_version"],
    )
    newest = session.execute(
        select(Candidate.model_version, Candidate.train_seconds)
        .where(Candidate.train_seconds.is_not(None))
        .order_by(Candidate.created_at.desc(), Candidate.id.desc())
        .limit(1)
    ).first()
    if newest is not None:
        last.add_metric([newest.model_version or ""], newest.train_seconds)
    yield last


def _evaluation(session) -> Iterator[Metric]:
    """The newest evaluated candidate's closed-loop success per task, and its champion's on
    the same seeds."""
    success = GaugeMetricFamily(
        "flywheel_evaluation_success_ratio",
        "Closed-loop success of the newest evaluated candidate and of its champion, per task.",
        labels=["side", "model_version", "task"],
    )
    newest = session.scalar(
        select(Evaluation.candidate_id).order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
    )
    if newest is not None:
        version = session.scalar(select(Candidate.model_version).where(Candidate.id == newest))
        for e in session.scalars(select(Evaluation).where(Evaluation.candidate_id == newest)):
            success.add_metric(["candidate", version or "", e.task], e.candidate_successes / e.n)
            if e.champion_successes is not None and e.champion_version is not None:
                success.add_metric(
                    ["champion", e.champion_version, e.task], e.champion_successes / e.n
                )
    yield success


def _rollouts(session) -> Iterator[Metric]:
    champion = GaugeMetricFamily(
        "flywheel_champion_info",
        "The version the fleet's champion is (value 1).",
        labels=["version"],
    )
    version = champion_of(session=session)
    if version is not None:
        champion.add_metric([version], 1)
    yield champion
    states = CounterMetricFamily(
        "flywheel_rollouts", "Rollouts by how they stand.", labels=["state"]
    )
    for state, count in session.execute(
        select(Rollout.state, func.count()).group_by(Rollout.state)
    ):
        states.add_metric([state], count)
    yield states
    rollout = in_progress(session)
    stage = GaugeMetricFamily(
        "flywheel_rollout_stage",
        "Stage (1 = first) of the rollout in progress; absent when none is.",
        labels=["rollout", "to_version", "stage"],
    )
    share = GaugeMetricFamily(
        "flywheel_rollout_share",
        "Share of the fleet on the candidate of the rollout in progress (0 when none is).",
    )
    if rollout is not None and rollout.stages:
        current = rollout.stages[rollout.current_stage]
        stage.add_metric(
            [str(rollout.id), rollout.to_version, current["name"]], rollout.current_stage + 1
        )
        share.add_metric([], current["share"])
    else:
        share.add_metric([], 0.0)
    yield stage
    yield share


def _heartbeats(session) -> Iterator[Metric]:
    """What the robots report live, per policy version: what a rollout is judged on."""
    families = {
        column: CounterMetricFamily(f"flywheel_robot_{name}", help_text, labels=["policy_version"])
        for column, name, help_text in (
            (Heartbeat.episodes, "episodes", "Episodes robots reported in heartbeats."),
            (Heartbeat.failures, "failures", "Episodes robots did not complete alone."),
            (Heartbeat.interventions, "interventions", "Operator interventions robots reported."),
            (Heartbeat.active_seconds, "active_seconds", "Seconds robots reported working."),
        )
    }
    rows = session.execute(
        select(
            Heartbeat.policy_version, *(func.coalesce(func.sum(c), 0) for c in families)
        ).group_by(Heartbeat.policy_version)
    ).all()
    for version, *sums in rows:
        for family, value in zip(families.values(), sums, strict=True):
            family.add_metric([version or "none"], value)
    yield from families.values()


def _nights(session):
    """Nights by state; returns the ingest run of the newest night that ingested."""
    nights = CounterMetricFamily("flywheel_nights", "Nightly runs by state.", labels=["state"])
    for state, count in session.execute(
        select(NightlyRun.state, func.count()).group_by(NightlyRun.state)
    ):
        nights.add_metric([state], count)
    yield nights
    return session.scalar(
        select(NightlyRun.ingest_run_id)
        .where(NightlyRun.ingest_run_id.is_not(None))
        .order_by(NightlyRun.id.desc())
        .limit(1)
    )


def _last_night_fleet(settings: Settings, ingest_run_id: str | None) -> Iterator[Metric]:
    """The fleet's figures for the newest night, as the nightly table shows them."""
    figures = fleet_figures(settings, ingest_run_id)
    per_hour = GaugeMetricFamily(
        "flywheel_interventions_per_robot_hour",
        "Operator interventions per robot-hour in the newest night's fleet deployments.",
    )
    success = GaugeMetricFamily(
        "flywheel_fleet_autonomous_success_ratio",
        "Share of the newest night's fleet deployments completed with no intervention.",
    )
    if figures.get("interventions_per_robot_hour") is not None:
        per_hour.add_metric([], figures["interventions_per_robot_hour"])
    if figures.get("episodes"):
        success.add_metric([], figures["autonomous_success"])
    yield per_hour
    yield success
