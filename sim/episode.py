"""One episode of one robot: the policy acts, the operator may take over, every step recorded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from services.episodes.model import EpisodeRecording, InterventionSpan
from services.features import CONTROL_OPERATOR, CONTROL_POLICY
from services.ingest.formats.mcap_writer import h264_frames, write_episode_mcap
from services.twin.env import PolicyFn, SimEnv
from services.twin.eyes import PolicyEyes
from services.twin.render import CameraSetup, SceneCameras
from sim.operator import Operator


class Shadow(Protocol):
    """A policy run beside the robot's on what it sees, never executed (the policy server's
    shadow mode: services/shadow/tap.py)."""

    version: str

    def observe(
        self,
        *,
        robot_id: str,
        episode_uuid: str,
        step: int,
        state: np.ndarray,
        task: str,
        images: dict[str, np.ndarray] | None,
        served_version: str,
        served_action: np.ndarray,
    ) -> bool: ...


@contextlib.contextmanager
def robot_cameras(env: SimEnv, setup: CameraSetup | None) -> Iterator[SceneCameras | None]:
    """The robot's cameras in ``env``'s world, or None: no cameras asked for, or a task that has
    none (the toy task). A name the task's cameras lack is refused."""
    if setup is None or not env.camera_names:
        yield None
        return
    with env.open_cameras(setup.names, setup.px) as cameras:
        yield cameras


def run_episode(
    env: SimEnv,
    seed: int,
    *,
    policy: PolicyFn | None,
    operator: Operator,
    robot_id: str,
    policy_version: str | None,
    started_at: datetime,
    episode_uuid: str,
    cameras: SceneCameras | None = None,
    camera_every: int = 1,
    eyes: PolicyEyes | None = None,
    shadow: Shadow | None = None,
) -> EpisodeRecording:
    """Run and record one episode. ``policy=None`` records an expert demonstration.
    ``cameras`` render the scene every ``camera_every`` steps, before the step's action; a
    vision policy sees their frames through ``eyes`` (which every step is shown, so its codecs
    run as the store's do, whoever is in control).

    With a ``shadow``, the robot asks its policy for an action on every step, as a robot
    that calls a policy server does, also while the operator is in control (the answer is
    not executed then), and each step goes to the shadow beside the policy's answer."""
    state = env.reset(seed)
    operator.start()
    demo = policy is None
    frames: dict[str, list[tuple[float, np.ndarray]]] = {}
    states, actions, sources, reasons = [], [], [], []
    spans: list[InterventionSpan] = []
    takeover_start: int | None = None
    reason: str | None = None
    success = False
    for step in range(env.max_steps):
        rendered = None
        if cameras is not None and step % camera_every == 0:
            rendered = cameras.render()
            for name, frame in rendered.items():
                frames.setdefault(name, []).append((step / env.control_hz, frame))
        images = eyes.see(rendered) if eyes is not None else None
        by_operator = demo or operator.in_control
        expert_action = env.expert_action(state)
        proposed = None
        if not demo and (shadow is not None or not by_operator):
            proposed = (
                policy(state, env.task) if images is None else policy(state, env.task, images)
            )
        action = expert_action if by_operator else proposed
        if shadow is not None and proposed is not None:
            shadow.observe(
                robot_id=robot_id,
                episode_uuid=episode_uuid,
                step=step,
                state=state,
                task=env.task,
                images=images,
                served_version=policy_version,
                served_action=np.asarray(proposed, dtype=np.float32),
            )
        states.append(state)
        actions.append(np.asarray(action, dtype=np.float32))
        sources.append(CONTROL_OPERATOR if by_operator else CONTROL_POLICY)
        reasons.append(reason)
        reason = None
        result = env.step(action)
        state = result.state
        if result.success:
            success = True
            break
        if not demo:
            was_in_control = operator.in_control
            reason = operator.observe(result.progress, action, expert_action)
            if reason is not None:
                takeover_start = step + 1
            elif was_in_control and not operator.in_control:
                spans.append(_span(takeover_start, step + 1, operator, reasons))
                takeover_start = None
    if takeover_start is not None and takeover_start < len(states):
        spans.append(_span(takeover_start, len(states), operator, reasons))
    return EpisodeRecording(
        episode_uuid=episode_uuid,
        robot_id=robot_id,
        task=env.task,
        policy_version=policy_version,
        kind="demo" if demo else "deployment",
        operator_id=operator.operator_id,
        started_at=started_at,
        control_hz=env.control_hz,
        states=np.stack(states),
        actions=np.stack(actions),
        control_source=sources,
        reasons=reasons,
        outcome="success" if success else "failure",
        interventions=spans,
        camera_frames=frames,
    )


def upload(recording: EpisodeRecording, path: Path, setup: CameraSetup | None) -> Path:
    """Write the episode's log as a robot uploads it, its cameras as H.264."""
    fps = setup.hz if setup is not None else recording.control_hz
    cameras = {name: h264_frames(f, fps) for name, f in recording.camera_frames.items()}
    return write_episode_mcap(recording, path, cameras=cameras)


def _span(start: int, end: int, operator: Operator, reasons: list) -> InterventionSpan:
    return InterventionSpan(
        start_step=start,
        end_step=end,
        kind="takeover",
        operator_id=operator.operator_id,
        reason=reasons[start] if start < len(reasons) else None,
    )
