"""GET /metrics: the flywheel's figures in Prometheus text format, read from the store, so
every API replica reports the same numbers and nothing is lost on restart.

A scrape does not query the store: it gets a snapshot of the page, taken at most once every
FLYWHEEL_METRICS_TTL_S seconds, by one scrape at a time (the scrapes that come while it
queries get the previous snapshot), so more Prometheus servers or a shorter scrape interval
add no load on the database.

The figures come from the read model (``services/readmodel/metrics.py``); this module only
names them. The Grafana dashboard in ``dashboards/grafana/`` is built on these names; the
tests check that every panel's query names one of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.api.deps import SettingsDep
from services.config import Settings
from services.nights import fleet_figures
from services.readmodel import metrics as figures
from services.registry.ledger import champion_of
from services.store import session_scope

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.state.metrics_snapshot = MetricsSnapshot()


@router.get("/metrics")
def metrics(request: Request, settings: SettingsDep) -> Response:
    page = request.app.state.metrics_snapshot.page(settings)
    return Response(page, media_type=CONTENT_TYPE_LATEST)


def render(settings: Settings) -> bytes:
    """The page as the store stands now (every figure's queries run)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings))
    return generate_latest(registry)


class MetricsSnapshot:
    """The rendered page per store, kept for the settings' TTL (``clock``: seconds, monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._refreshing = threading.Lock()
        self._pages: dict[str, tuple[float, bytes]] = {}

    def page(self, settings: Settings) -> bytes:
        stored = self._pages.get(settings.db_url)
        if self._fresh(stored, settings):
            return stored[1]
        # One refresher: while it queries, a scrape with a previous page gets that one.
        if not self._refreshing.acquire(blocking=stored is None):
            return stored[1]
        try:
            stored = self._pages.get(settings.db_url)
            if not self._fresh(stored, settings):
                stored = self._pages[settings.db_url] = (self._clock(), render(settings))
            return stored[1]
        finally:
            self._refreshing.release()

    def _fresh(self, stored: tuple[float, bytes] | None, settings: Settings) -> bool:
        return stored is not None and self._clock() - stored[0] < settings.metrics.ttl_s


class StoreCollector(Collector):
    """Counts and latest figures from the Flywheel store, as Prometheus metric families."""

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
    total_interventions, total_seconds = 0, 0.0
    for row in figures.episode_counts(session):
        family = {"ok": ingested, "quarantined": quarantined}.get(row.status)
        if family is None:  # duplicates of stored episodes: neither new data nor refused
            continue
        family.add_metric([row.kind or "unknown"], row.episodes)
        if row.status == "ok" and row.kind == "deployment":
            total_interventions += row.interventions
            total_seconds += row.seconds
    interventions.add_metric([], total_interventions)
    seconds.add_metric([], total_seconds)
    yield from (ingested, quarantined, interventions, seconds)


def _training(session) -> Iterator[Metric]:
    training = figures.training(session)
    yield CounterMetricFamily(
        "flywheel_candidates_trained",
        "Candidates trained (with a recorded time).",
        value=training.trained,
    )
    yield CounterMetricFamily(
        "flywheel_training_seconds", "Wall time spent training candidates.", value=training.seconds
    )
    last = GaugeMetricFamily(
        "flywheel_last_training_seconds",
        "Training time of the newest trained candidate.",
        labels=["model_version"],
    )
    if training.newest_seconds is not None:
        last.add_metric([training.newest_version or ""], training.newest_seconds)
    yield last


def _evaluation(session) -> Iterator[Metric]:
    success = GaugeMetricFamily(
        "flywheel_evaluation_success_ratio",
        "Closed-loop success of the newest evaluated candidate and of its champion, per task.",
        labels=["side", "model_version", "task"],
    )
    for row in figures.newest_evaluation(session):
        success.add_metric([row.side, row.model_version, row.task], row.ratio)
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
    for state, count in figures.rollouts_by_state(session):
        states.add_metric([state], count)
    yield states
    current = figures.rollout_in_progress(session)
    stage = GaugeMetricFamily(
        "flywheel_rollout_stage",
        "Stage (1 = first) of the rollout in progress; absent when none is.",
        labels=["rollout", "to_version", "stage"],
    )
    share = GaugeMetricFamily(
        "flywheel_rollout_share",
        "Share of the fleet on the candidate of the rollout in progress (0 when none is).",
    )
    if current is not None:
        stage.add_metric(
            [str(current.rollout_id), current.to_version, current.stage], current.number
        )
        share.add_metric([], current.share)
    else:
        share.add_metric([], 0.0)
    yield stage
    yield share


def _heartbeats(session) -> Iterator[Metric]:
    """What the robots report live, per policy version: what a rollout is judged on."""
    families = {
        field: CounterMetricFamily(f"flywheel_robot_{field}", help_text, labels=["policy_version"])
        for field, help_text in (
            ("episodes", "Episodes robots reported in heartbeats."),
            ("failures", "Episodes robots did not complete alone."),
            ("interventions", "Operator interventions robots reported."),
            ("active_seconds", "Seconds robots reported working."),
        )
    }
    for sums in figures.heartbeat_sums(session):
        for field, family in families.items():
            family.add_metric([sums.policy_version or "none"], getattr(sums, field))
    yield from families.values()


def _nights(session):
    """Nights by state; returns the ingest run of the newest night that ingested."""
    nights = CounterMetricFamily("flywheel_nights", "Nightly runs by state.", labels=["state"])
    for state, count in figures.nights_by_state(session):
        nights.add_metric([state], count)
    yield nights
    return figures.newest_ingest_run(session)


def _last_night_fleet(settings: Settings, ingest_run_id: str | None) -> Iterator[Metric]:
    """The fleet's figures for the newest night, as the nightly table shows them."""
    fleet = fleet_figures(settings, ingest_run_id)
    per_hour = GaugeMetricFamily(
        "flywheel_interventions_per_robot_hour",
        "Operator interventions per robot-hour in the newest night's fleet deployments.",
    )
    success = GaugeMetricFamily(
        "flywheel_fleet_autonomous_success_ratio",
        "Share of the newest night's fleet deployments completed with no intervention.",
    )
    if fleet.get("interventions_per_robot_hour") is not None:
        per_hour.add_metric([], fleet["interventions_per_robot_hour"])
    if fleet.get("episodes"):
        success.add_metric([], fleet["autonomous_success"])
    yield per_hour
    yield success
