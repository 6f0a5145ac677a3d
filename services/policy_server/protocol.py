"""One step of openpi's policy protocol, whatever carries it (a websocket, an HTTP POST).

The robot sends an observation; the answer is ``{"actions": chunk, "policy_version": v,
"server_timing": {"infer_ms": t}}`` with ``chunk`` a float32 array ``(chunk, action_dim)``.
openpi's control messages (``{"__ctrl__": "episode_start", ...}``) are acknowledged as
openpi's server does (``{"__ack__": "episode_start"}``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from services.policy_server.observations import CONTROL_KEY, ObservationError, parse_observation
from services.policy_server.routing import Route


class NotServed(Exception):
    """The robot has no model to run yet (no assignment, or its version failed to load)."""


def answer(route: Route | None, message: Any) -> dict:
    """The reply to one decoded message. Raises ObservationError (the robot's mistake) or
    NotServed (nothing to serve it with); either way the robot may send the next one."""
    if isinstance(message, Mapping) and CONTROL_KEY in message:
        return {"__ack__": str(message[CONTROL_KEY])}
    if route is None:
        raise NotServed
    model = route.executed
    observation = parse_observation(message, model.spec)
    started = time.perf_counter()
    actions = model.infer(observation)
    if route.shadow is not None:  # only queued: the shadow runs on its own thread
        route.shadow.observe(
            robot_id=route.robot_id,
            episode_uuid=observation.episode_id,
            step=observation.step,
            state=observation.state,
            task=observation.task,
            images=observation.images,
            served_version=model.version,
            served_action=actions[0],
        )
    return {
        "actions": actions,
        "policy_version": model.version,
        "server_timing": {"infer_ms": (time.perf_counter() - started) * 1000},
    }


__all__ = ["NotServed", "ObservationError", "answer"]
