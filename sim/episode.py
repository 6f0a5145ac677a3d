"""One episode of one robot: the policy acts, the operator may take over, every step recorded."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from services.episodes.model import EpisodeRecording, InterventionSpan
from services.features import CONTROL_OPERATOR, CONTROL_POLICY
from services.twin.env import PolicyFn, SimEnv
from sim.operator import Operator


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
) -> EpisodeRecording:
    """Run and record one episode. ``policy=None`` records an expert demonstration."""
    state = env.reset(seed)
    operator.start()
    demo = policy is None
    states, actions, sources, reasons = [], [], [], []
    spans: list[InterventionSpan] = []
    takeover_start: int | None = None
    reason: str | None = None
    success = False
    for step in range(env.max_steps):
        by_operator = demo or operator.in_control
        expert_action = env.expert_action(state)
        action = expert_action if by_operator else policy(state, env.task)
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
    )


def _span(start: int, end: int, operator: Operator, reasons: list) -> InterventionSpan:
    return InterventionSpan(
        start_step=start,
        end_step=end,
        kind="takeover",
        operator_id=operator.operator_id,
        reason=reasons[start] if start < len(reasons) else None,
    )
