"""Which loaded model answers each robot, kept in step with the fleet's assignments.

The store says which version each robot runs (``services/serving/assignments.py``; the
rollout moves robots between champion and candidate). ``Router.refresh`` reads it, loads and
warms up any version not loaded yet, and only then points the robots at it: one assignment of
a new routing table, so a request reads either the old table or the new one. A request under
way keeps the model it started with; a robot whose new version cannot be loaded (or is still
loading) keeps being served its previous one, and the refresh says why. Models no robot uses
any more are let go.

A route holds the model the robot executes; a shadow policy (a candidate run beside it on the
same observations, never executed) would be a second model on the same route.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from services.config import Settings
from services.policy_server.models import ModelUnavailable, ServedModel, load_served_model
from services.serving.assignments import fleet
from services.store import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    robot_id: str
    # The model whose actions the robot runs: its assigned version, or its previous one
    # while the assigned one is loading or failed to load.
    executed: ServedModel


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
            robots = self._read_fleet()
            report = RefreshReport()
            wanted = {r.version for r in robots.values() if r.version is not None}
            if self.preload is not None:
                wanted.add(self.preload)
            models = dict(self._models)
            for version in sorted(wanted - set(models)):
                try:
                    models[version] = self._load(version)
                    report.loaded.append(version)
                except ModelUnavailable as exc:
                    report.failed[version] = str(exc)
                    log.error("%s", exc)
            routes = {}
            for robot in robots.values():
                route = self._route_for(robot, models)
                if route is None:
                    continue
                old = self._routes.get(robot.id)
                if old is None or old.executed is not route.executed:
                    report.swapped.append(robot.id)
                routes[robot.id] = route
            used = {r.executed.version for r in routes.values()}
            if self.preload is not None:
                used.add(self.preload)
            # One assignment each: a reader sees the old table or the new one, never half.
            self._routes = routes
            self.robots = robots
            self._models = {v: m for v, m in models.items() if v in used}
            self.failed = report.failed
            self.refreshed = True
            return report

    def _route_for(self, robot: RobotRecord, models: dict[str, ServedModel]) -> Route | None:
        if robot.version is None:
            return None
        model = models.get(robot.version)
        if model is None:  # not loadable: the robot stays on what it ran, if anything
            old = self._routes.get(robot.id)
            return old
        return Route(robot_id=robot.id, executed=model)

    def _read_fleet(self) -> dict[str, RobotRecord]:
        with session_scope(self.settings.db_url) as session:
            return {
                r.id: RobotRecord(
                    id=r.id,
                    group=r.group,
                    version=r.policy_version,
                    credential_hash=r.credential_hash,
                )
                for r in fleet(session=session)
                if self.group is None or r.group == self.group
            }
