"""A simulated robot's side of the robot-facing API, over HTTP like a real robot.

Each robot asks for its assignment, downloads the assigned model from its URI once per
version, checks the checksum before running it, and reports heartbeats. ``http`` is an
``httpx.Client(base_url=...)`` against a running Flywheel API; ``credentials`` holds each
robot's own credential (``fwr_...``), sent with every request as that robot.

A request that times out or gets a server error is tried again, a heartbeat with the same
``heartbeat_id``: the answer may have been lost after the heartbeat was counted, and the
server counts an id once. A busy API (503) or a lockout (429) is waited out for its
Retry-After, with up to half again as jitter so a fleet does not come back all at once.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from policies.checkpoint import checkpoint_checksum, load_checkpoint
from sim.fleet import Assignment

# Seconds before each further try of a request that failed on the way or with a server
# error; the last is repeated for any further attempt (a Retry-After, when sent, wins).
RETRY_DELAYS = (0.5, 2.0, 5.0)
# Answers that mean "not now": the request was not acted on and may be sent again.
RETRYABLE = (429, 503)
# The longest wait a Retry-After is taken at (a robot keeps working while it waits).
MAX_RETRY_AFTER_S = 30.0


class RobotApiError(RuntimeError):
    """The API refused a request, or a model failed its checksum."""


class ApiFleetClient:
    def __init__(
        self,
        http: httpx.Client,
        model_cache: Path,
        credentials: Mapping[str, str],
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.http = http
        self.model_cache = Path(model_cache)
        self.credentials = dict(credentials)
        self.retry_delays = tuple(retry_delays) or (0.0,)
        self.attempts = attempts
        self.sleep = sleep
        self._policies: dict[tuple[str, str], object] = {}

    def assignment(self, robot_id: str) -> Assignment:
        answer = self._call(robot_id, "GET", f"/robots/{robot_id}/assignment")
        if answer["model_version"] is None:
            return Assignment(version=None, policy=None)
        policy = self._policy(answer["model_version"], answer["model_uri"], answer["checksum"])
        return Assignment(
            version=answer["model_version"],
            policy=policy.act,
            cameras=policy.cameras,
            episode=policy.start_episode,
        )

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
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            delay = self.retry_delays[min(attempt, len(self.retry_delays)) - 1]
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:  # timed out or cut: the same request again
                if last:
                    raise RobotApiError(f"{method} {path}: {exc!r}") from exc
                self.sleep(delay)
                continue
            if last or not (response.status_code in RETRYABLE or response.status_code >= 500):
                break
            if "retry-after" in response.headers:
                delay = retry_after_s(response) * random.uniform(1.0, 1.5)
            self.sleep(delay)
        if response.status_code in RETRYABLE:
            raise RobotApiError(
                f"{method} {path}: {response.status_code} {response.text} "
                f"(still refused after {self.attempts} attempts)"
            )
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


def retry_after_s(response: httpx.Response) -> float:
    """Retry-After in seconds (the API sends seconds; a date or nothing counts as 1 s)."""
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
