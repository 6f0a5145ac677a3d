"""Which loaded model answers each robot, kept in step with the fleet's assignments.

The store says which version each robot runs (``services/serving/assignments.py``; the
rollout moves robots between champion and candidate). ``Router.refresh`` reads it, loads and
warms up any version not loaded yet, and only then points the robots at it: one assignment of
a new routing table, so a request reads either the old table or the new one. A request under
way keeps the model it started with; a robot whose new version cannot be loaded (or is still
loading) keeps being served its previous one, and the refresh says why. Models no robot uses
any more are let go.

A route holds the model the robot executes and, while a shadow run is under way
(``services/shadow``), the shadow's tap: the candidate run beside it on the same observations,
off the executed path, its actions logged and never sent. A robot already running the
candidate (a canary robot) gets no shadow of itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from services.config import Settings
from services.policy_server.models import ModelUnavailable, ServedModel, load_served_model
from services.serving.assignments import fleet
from services.shadow.runs import running_shadow
from services.shadow.tap import ShadowTap
from services.store import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    robot_id: str
    # The model whose actions the robot runs: its assigned version, or its previous one
    # while the assigned one is loading or failed to load.
    executed: ServedModel
    # The shadow run beside it, if any.
    shadow: ShadowTap | None = None


@dataclass(frozen=True)
class RobotRecord:
    """A robot as the store has it at the last refresh."""

    id: str
    group: str
    version: str | None
    # SHA-256 of its working credential; None once revoked.
    credential_hash: str | None


@dataclass
class RefreshReport:
    loaded: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    # Versions that could not be loaded, and why.
    failed: dict[str, str] = field(default_factory=dict)


class Router:
    def __init__(
        self,
        settings: Settings,
        *,
        loader: Callable[[str], ServedModel] | None = None,
    ) -> None:
        ps = settings.policy_server
        self.settings = settings
        self.group = ps.robot_group
        self.preload = ps.model_version
        self._load = loader or (
            lambda v: load_served_model(settings, v, warmup_calls=ps.policy_server_warmup_calls)
        )
        self._models: dict[str, ServedModel] = {}
        self._routes: dict[str, Route] = {}
        self._tap: ShadowTap | None = None
        self._make_tap = lambda version, model: ShadowTap(
            version,
            model.act,
            settings.shadow_log,
            queue_steps=settings.shadow.queue_steps,
        )
        self.robots: dict[str, RobotRecord] = {}
        self.failed: dict[str, str] = {}
        self.refreshed = False
        self._lock = threading.Lock()  # one refresh at a time

    def route(self, robot_id: str) -> Route | None:
        return self._routes.get(robot_id)

    @property
    def ready(self) -> bool:
        """Loaded what it must serve: the preloaded version, if any, after a first refresh."""
        return self.refreshed and (self.preload is None or self.preload in self._models)

    def why_not_served(self, robot_id: str) -> str:
        robot = self.robots.get(robot_id)
        if robot is not None and robot.version in self.failed:
            return f"robot {robot_id!r} cannot be served: {self.failed[robot.version]}"
        if robot is not None and robot.version is None:
            return f"robot {robot_id!r} has no model assigned yet (there is no champion)"
        return f"robot {robot_id!r}'s model is not loaded yet: try again shortly"

    def versions(self) -> list[str]:
        return sorted(self._models, key=lambda v: (len(v), v))

    def refresh(self) -> RefreshReport:
        """Read the fleet, load what is missing, then swap the routing table."""
        with self._lock:
            robots, shadow = self._read_fleet()
            report = RefreshReport()
            wanted = {r.version for r in robots.values() if r.version is not None}
            if self.preload is not None:
                wanted.add(self.preload)
            if shadow is not None:
                wanted.add(shadow)
            models = dict(self._models)
            for version in sorted(wanted - set(models)):
                try:
                    models[version] = self._load(version)
                    report.loaded.append(version)
                except ModelUnavailable as exc:
                    report.failed[version] = str(exc)
                    log.error("%s", exc)
            tap = self._shadow_tap(shadow, models)
            routes = {}
            for robot in robots.values():
                route = self._route_for(robot, models, tap)
                if route is None:
                    continue
                old = self._routes.get(robot.id)
                if old is None or old.executed is not route.executed:
                    report.swapped.append(robot.id)
                routes[robot.id] = route
            used = {r.executed.version for r in routes.values()}
            if self.preload is not None:
                used.add(self.preload)
            if tap is not None:
                used.add(tap.version)
            # One assignment each: a reader sees the old table or the new one, never half.
            self._routes = routes
            self.robots = robots
            self._models = {v: m for v, m in models.items() if v in used}
            self.failed = report.failed
            self.refreshed = True
            # The shadow run ended or changed: no route offers to the old tap any more; it
            # finishes its queue and writes its log before the server says it stopped.
            if self._tap is not None and self._tap is not tap:
                self._tap.close()
            self._tap = tap
            return report

    def close(self) -> None:
        """Stop the shadow, writing out what it logged."""
        with self._lock:
            tap, self._tap = self._tap, None
        if tap is not None:
            tap.close()

    def shadow_counts(self) -> dict | None:
        tap = self._tap
        return None if tap is None else {"version": tap.version, **tap.counts}

    def _shadow_tap(self, version: str | None, models: dict[str, ServedModel]):
        """The tap of the running shadow: kept while the version stays, a new one for a new
        version; None when none runs or its model could not be loaded."""
        if version is None or version not in models:
            return None
        if self._tap is not None and self._tap.version == version:
            return self._tap
        return self._make_tap(version, models[version])

    def _route_for(
        self, robot: RobotRecord, models: dict[str, ServedModel], tap: ShadowTap | None
    ) -> Route | None:
        if robot.version is None:
            return None
        model = models.get(robot.version)
        if model is None:  # not loadable: the robot stays on what it ran, if anything
            old = self._routes.get(robot.id)
            return (
                None if old is None else Route(robot.id, old.executed, _beside(tap, old.executed))
            )
        return Route(robot_id=robot.id, executed=model, shadow=_beside(tap, model))

    def _read_fleet(self) -> tuple[dict[str, RobotRecord], str | None]:
        """The robots (of this server's group) and the running shadow's version."""
        with session_scope(self.settings.db_url) as session:
            run = running_shadow(session=session)
            return {
                r.id: RobotRecord(
                    id=r.id,
                    group=r.group,
                    version=r.policy_version,
                    credential_hash=r.credential_hash,
                )
                for r in fleet(session=session)
                if self.group is None or r.group == self.group
            }, (run.version if run is not None else None)


def _beside(tap: ShadowTap | None, executed: ServedModel) -> ShadowTap | None:
    """No robot shadows the model it runs."""
    return tap if tap is not None and tap.version != executed.version else None
