"""A simulated robot's side of the robot-facing API, over HTTP like a real robot.

Each robot asks for its assignment, downloads the assigned model from its URI once per
version, checks the checksum before running it, and reports heartbeats. ``http`` is an
``httpx.Client(base_url=...)`` against a running Flywheel API; ``credentials`` holds each
robot's own credential (``fwr_...``), sent with every request as that robot.

A request that times out or gets a server error is tried again, a heartbeat with the same
``heartbeat_id``: the answer may have been lost after the heartbeat was counted, and the
server counts an id once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from policies.checkpoint import checkpoint_checksum, load_checkpoint
from sim.fleet import Assignment

# Seconds before each further try of a request that failed on the way (the server's
# Retry-After, when it sends one, wins).
RETRY_DELAYS = (0.5, 2.0, 5.0)


class RobotApiError(RuntimeError):
    """The API refused a request, or a model failed its checksum."""


class ApiFleetClient:
    def __init__(
        self,
        http: httpx.Client,
        model_cache: Path,
        credentials: Mapping[str, str],
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.http = http
        self.model_cache = Path(model_cache)
        self.credentials = dict(credentials)
        self.retry_delays = tuple(retry_delays)
        self._policies: dict[tuple[str, str], object] = {}

    def assignment(self, robot_id: str) -> Assignment:
        answer = self._call(robot_id, "GET", f"/robots/{robot_id}/assignment")
        if answer["model_version"] is None:
            return Assignment(version=None, policy=None)
        policy = self._policy(answer["model_version"], answer["model_uri"], answer["checksum"])
        return Assignment(version=answer["model_version"], policy=policy.act)

    def heartbeat(
        self,
        robot_id: str,
        version: str | None,
        *,
        heartbeat_id: str,
        episodes: int,
        failures: int,
        interventions: int,
        active_seconds: float,
    ) -> None:
        self._call(
            robot_id,
            "POST",
            f"/robots/{robot_id}/heartbeats",
            json={
                "heartbeat_id": heartbeat_id,
                "policy_version": version,
                "successes": episodes - failures,
                "failures": failures,
                "interventions": interventions,
                "active_seconds": active_seconds,
            },
        )

    def _call(self, robot_id: str, method: str, path: str, **kwargs) -> dict:
        if robot_id not in self.credentials:
            raise RobotApiError(f"robot {robot_id!r} has no credential: enroll it first")
        headers = {"Authorization": f"Bearer {self.credentials[robot_id]}"}
        for delay in (*self.retry_delays, None):
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:  # timed out or cut: the same request again
                if delay is None:
                    raise RobotApiError(f"{method} {path}: {exc!r}") from exc
                time.sleep(delay)
                continue
            if response.status_code < 500 or delay is None:
                break
            time.sleep(_retry_after(response, delay))
        if response.status_code >= 400:
            raise RobotApiError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def _policy(self, version: str, uri: str, checksum: str):
        key = (version, checksum)
        if key not in self._policies:
            import mlflow  # heavy: only a robot that downloads a model pays for it

            target = self.model_cache / version
            checkpoint = target / "artifacts" / "checkpoint"
            if not checkpoint.exists() or checkpoint_checksum(checkpoint) != checksum:
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
            got = checkpoint_checksum(checkpoint)
            if got != checksum:
                raise RobotApiError(f"model {version} from {uri}: checksum {got} != {checksum}")
            self._policies[key] = load_checkpoint(checkpoint)
        return self._policies[key]


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(float(response.headers.get("retry-after", default)), 60.0)
    except ValueError:  # an HTTP date: not worth parsing for a simulated robot
        return default
