"""A model version as the policy server serves it: downloaded from the MLflow registry,
checked against the checksum registered with it, loaded and warmed up.

Each call answers an action chunk, ``(chunk, action_dim)``: the whole chunk for a policy that
predicts one (ACT's ``chunk_size`` actions; the robot runs them, or the first, as it likes),
one row for a policy that predicts one action (the MLP).
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from policies.checkpoint import LoadedPolicy, checkpoint_checksum, load_checkpoint
from services.config import Settings
from services.policy_server.observations import Observation, PolicySpec
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
        policy = self.policy
        if observation.images:
            # A policy with cameras: its act() takes the images (one action per call).
            return policy.act(observation.state, observation.task, images=observation.images)[None]
        if self.chunk_size > 1:
            with torch.inference_mode():
                state = policy.stats.normalize_state(observation.state[None])
                task = torch.tensor([self.spec.tasks.index(observation.task)], dtype=torch.int64)
                return policy.model.forward_chunk(torch.from_numpy(state), task)[0].numpy()
        return policy.act(observation.state, observation.task)[None]

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
            model.infer(_zero_observation(model.spec, task))
    return replace(model, warmup_s=time.perf_counter() - warm)


def _served(policy, version, checksum, verified, started) -> ServedModel:
    config = policy.config
    cameras = tuple(c if isinstance(c, str) else c.name for c in getattr(config, "cameras", ()))
    chunks = getattr(config, "chunk_size", 1) if hasattr(policy.model, "forward_chunk") else 1
    if cameras and "images" not in inspect.signature(policy.act).parameters:
        raise ModelUnavailable(f"model version {version} has cameras, but takes no images")
    return ServedModel(
        version=version,
        checksum=checksum,
        checksum_verified=verified,
        policy=policy,
        spec=PolicySpec(state_dim=config.state_dim, tasks=tuple(config.tasks), cameras=cameras),
        # With cameras, act() answers one action: the chunk path is state-only.
        chunk_size=1 if cameras else chunks,
        load_s=time.perf_counter() - started,
        warmup_s=0.0,
    )


def _zero_observation(spec: PolicySpec, task: str) -> Observation:
    """A neutral input for warm-up: zero state, black 64x64 images for each camera."""
    images = {name: np.zeros((64, 64, 3), np.uint8) for name in spec.cameras}
    return Observation(state=np.zeros(spec.state_dim, np.float32), task=task, images=images)
