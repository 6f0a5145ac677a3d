"""What a robot sends each step, checked against the policy it is served.

An observation is a map (openpi's ``infer(obs)``):

- ``observation.state`` (or ``state``): the robot's state, a vector of the policy's
  ``state_dim`` finite numbers;
- ``task`` (or openpi's ``prompt``): one of the tasks the policy was trained on; may be left
  out when it knows only one;
- camera images, for a policy that has cameras: ``images`` (a map of camera name to image)
  or one ``observation.images.<name>`` key per camera.

Optional, to tie the step to the robot's log (shadow mode: the shadow's action is logged by
episode and step, and joined with the episode the robot uploads):

- ``episode_id``: the robot's id of the episode (the one its upload carries);
- ``step``: the step's index within the episode, from 0.

Anything else is refused, and so is an image sent to a policy without cameras: a key the
server would ignore is most often a typo the robot should hear about. Every refusal says what
was wrong and what is expected; the connection stays open for the next observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.features import IMAGE_PREFIX, OBSERVATION_STATE

STATE_KEYS = (OBSERVATION_STATE, "state")
TASK_KEYS = ("task", "prompt")
IMAGES_KEY = "images"
EPISODE_KEY = "episode_id"
STEP_KEY = "step"
# openpi's control messages (episode start and end): acknowledged, no action.
CONTROL_KEY = "__ctrl__"


class ObservationError(ValueError):
    """An observation the served policy cannot act on; the message says why."""


@dataclass(frozen=True)
class PolicySpec:
    """What a served policy takes: the shape of its inputs."""

    state_dim: int
    tasks: tuple[str, ...]
    # Names of the cameras whose images it takes (none for a state-only policy).
    cameras: tuple[str, ...]


@dataclass(frozen=True)
class Observation:
    state: np.ndarray
    task: str
    images: dict[str, np.ndarray]
    # Where the step sits in the robot's log, when the robot says (shadow mode needs both).
    episode_id: str | None = None
    step: int | None = None


def parse_observation(message: Any, spec: PolicySpec) -> Observation:
    if not isinstance(message, Mapping):
        raise ObservationError(
            f"an observation is a map of keys to values, got {type(message).__name__}"
        )
    obs = {_key(k): v for k, v in message.items()}
    state = _one_of(obs, STATE_KEYS, required=True)
    task = _one_of(obs, TASK_KEYS, required=False)
    images = _images(obs)
    known = {IMAGES_KEY, EPISODE_KEY, STEP_KEY}
    unknown = sorted(set(obs) - set(STATE_KEYS) - set(TASK_KEYS) - known)
    unknown = [k for k in unknown if not k.startswith(IMAGE_PREFIX)]
    if unknown:
        raise ObservationError(
            f"unknown observation keys {unknown}: send {OBSERVATION_STATE!r} (or 'state'), "
            f"'task' (or 'prompt')" + (", and the camera images" if spec.cameras else "")
        )
    return Observation(
        state=_state(state, spec),
        task=_task(task, spec),
        images=_check_images(images, spec),
        episode_id=_episode_id(obs.get(EPISODE_KEY)),
        step=_step(obs.get(STEP_KEY)),
    )


def _episode_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise ObservationError(f"{EPISODE_KEY!r} is the robot's episode id, a string of 1-128")
    return value


def _step(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, np.integer | np.ndarray) and np.ndim(value) == 0:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ObservationError(f"{STEP_KEY!r} is the step's index in the episode, from 0")
    return value


def _key(key: Any) -> str:
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if not isinstance(key, str):
        raise ObservationError(f"observation keys are strings, got {key!r}")
    return key


def _one_of(obs: dict, keys: tuple[str, ...], *, required: bool) -> Any:
    present = [k for k in keys if k in obs]
    if len(present) > 1:
        raise ObservationError(f"send one of {list(keys)}, not both")
    if not present:
        if required:
            raise ObservationError(f"missing {keys[0]!r} (or {keys[1]!r}) in the observation")
        return None
    return obs[present[0]]


def _state(value: Any, spec: PolicySpec) -> np.ndarray:
    try:
        state = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ObservationError(f"{OBSERVATION_STATE!r} is not a vector of numbers") from exc
    if state.shape != (spec.state_dim,):
        raise ObservationError(
            f"{OBSERVATION_STATE!r} has shape {list(state.shape)}; this policy takes a vector "
            f"of {spec.state_dim} numbers"
        )
    if not np.isfinite(state).all():
        raise ObservationError(f"{OBSERVATION_STATE!r} holds NaN or infinite values")
    return state


def _task(value: Any, spec: PolicySpec) -> str:
    if value is None:
        if len(spec.tasks) == 1:
            return spec.tasks[0]
        raise ObservationError(f"missing 'task': this policy serves {list(spec.tasks)}")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value not in spec.tasks:
        raise ObservationError(f"task {value!r} is not one this policy serves: {list(spec.tasks)}")
    return value


def _images(obs: dict) -> dict[str, Any]:
    images = {k[len(IMAGE_PREFIX) :]: v for k, v in obs.items() if k.startswith(IMAGE_PREFIX)}
    nested = obs.get(IMAGES_KEY)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ObservationError(f"{IMAGES_KEY!r} is a map of camera name to image")
        if images:
            raise ObservationError(
                f"send camera images either in {IMAGES_KEY!r} or as {IMAGE_PREFIX}<name>, not both"
            )
        images = {_key(k): v for k, v in nested.items()}
    return images


def _check_images(images: dict[str, Any], spec: PolicySpec) -> dict[str, np.ndarray]:
    if images and not spec.cameras:
        raise ObservationError(
            f"this policy takes no camera images; got {sorted(images)}: send the state only"
        )
    missing = sorted(set(spec.cameras) - set(images))
    extra = sorted(set(images) - set(spec.cameras))
    if missing or extra:
        raise ObservationError(
            f"this policy takes images from cameras {list(spec.cameras)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    checked = {}
    for name, image in images.items():
        if isinstance(image, list):  # JSON's nested lists (HTTP clients)
            try:
                image = np.asarray(image, dtype=np.uint8)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ObservationError(f"image {name!r} is not an array of 0-255 values") from exc
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ObservationError(f"image {name!r} is not an array of height x width x channels")
        # Decoded arrays are views of the message's bytes, read-only; torch wants to own them.
        checked[name] = image if image.flags.writeable else image.copy()
    return checked
