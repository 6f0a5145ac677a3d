"""A model version as the policy server serves it: downloaded from the MLflow registry,
checked against the checksum registered with it, loaded and warmed up.

Each call answers an action chunk, ``(chunk, action_dim)`` (``LoadedPolicy.act_chunk``): the
whole chunk for a policy that predicts one (ACT's ``chunk_size`` actions; the robot runs them,
the first, or ensembles them as ``LoadedPolicy.start_episode`` does), one row for a policy
that predicts one action (the MLP). A vision policy takes one frame per camera.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from policies.checkpoint import LoadedPolicy, checkpoint_checksum, load_checkpoint
from services.config import Settings
from services.policy_server.observations import Observation, ObservationError, PolicySpec
from services.registry.mlflow_registry import policy_checkpoint, recorded_checksum

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """A version that cannot be served: not in the registry, or not the files registered."""


@dataclass(frozen=True)
class ServedModel:
    version: str
    # sha256 over the checkpoint's files, as checked against the registry.
    checksum: str
    # Whether the registry recorded a checksum to check against (versions registered before
    # it was recorded have none).
    checksum_verified: bool
    policy: LoadedPolicy
    spec: PolicySpec
    # Actions per answer (1 for a policy without chunks).
    chunk_size: int
    # How long loading (download, checksum, weights) and warming up took.
    load_s: float
    warmup_s: float

    def infer(self, observation: Observation) -> np.ndarray:
        """The action chunk for one observation: float32, (chunk_size, action_dim)."""
        try:
            return self.policy.act_chunk(
                observation.state, observation.task, observation.images or None
            )
        except ValueError as exc:  # frames that are not the policy's cameras' (check_frames)
            raise ObservationError(str(exc)) from exc

    def act(self, state: np.ndarray, task: str, images: dict | None) -> np.ndarray:
        """The action chunk as a shadow asks for it: the frames it reads, if it reads any
        (a state policy beside a vision one ignores the robot's frames)."""
        return self.policy.act_chunk(state, task, images if self.spec.cameras else None)

    def metadata(self) -> dict[str, Any]:
        """What a robot is told on connecting (openpi's server metadata)."""
        config = self.policy.config
        return {
            "policy_version": self.version,
            "policy": config.policy_name,
            "checksum": self.checksum,
            "checksum_verified": self.checksum_verified,
            "tasks": list(self.spec.tasks),
            "state_dim": self.spec.state_dim,
            "action_dim": config.action_dim,
            "chunk_size": self.chunk_size,
            "cameras": list(self.spec.cameras),
        }


def load_served_model(settings: Settings, version: str, *, warmup_calls: int) -> ServedModel:
    """Download (once per FLYWHEEL_HOME), verify, load and warm up a registered version."""
    started = time.perf_counter()
    try:
        checkpoint = policy_checkpoint(settings, version)
        expected = recorded_checksum(settings, version)
    except Exception as exc:  # MLflow's errors: no such version, registry unreachable
        raise ModelUnavailable(f"model version {version} cannot be downloaded: {exc}") from exc
    checksum = checkpoint_checksum(checkpoint)
    if expected is not None and checksum != expected:
        raise ModelUnavailable(
            f"model version {version}: the downloaded checkpoint's checksum {checksum} is not "
            f"the registered {expected}; it is not served (delete {checkpoint.parent.parent} "
            "to download it again)"
        )
    if expected is None:
        log.warning("model version %s has no recorded checksum: served unverified", version)
    policy = load_checkpoint(checkpoint)
    model = _served(policy, version, checksum, expected is not None, started)
    warm = time.perf_counter()
    for _ in range(warmup_calls):
        for task in model.spec.tasks:
            model.infer(_zero_observation(policy, task))
    return replace(model, warmup_s=time.perf_counter() - warm)


def _served(policy: LoadedPolicy, version, checksum, verified, started) -> ServedModel:
    config = policy.config
    return ServedModel(
        version=version,
        checksum=checksum,
        checksum_verified=verified,
        policy=policy,
        spec=PolicySpec(
            state_dim=config.state_dim,
            tasks=tuple(config.tasks),
            cameras=tuple(c.name for c in policy.cameras),
        ),
        chunk_size=policy.chunk_size,
        load_s=time.perf_counter() - started,
        warmup_s=0.0,
    )


def _zero_observation(policy: LoadedPolicy, task: str) -> Observation:
    """A neutral input for warm-up: zero state, a black frame of each camera's input size."""
    images = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in policy.cameras}
    state = np.zeros(policy.config.state_dim, np.float32)
    return Observation(state=state, task=task, images=images)
