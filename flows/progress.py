"""Stage progress of the flows, for whoever runs them in this process (the CLI's display).

The stage flows (and the fleet's shift) report entering and leaving the running state through
Prefect's state hooks; a listener registered with ``listening`` hears each stage's name when
it starts and when it ends. Imports no Prefect: the CLI registers its listener before it
imports the flows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Told (stage name, event): event is "started", "completed" or "failed".
StageListener = Callable[[str, str], None]

_listeners: list[StageListener] = []


@contextmanager
def listening(listener: StageListener) -> Iterator[None]:
    """Tell ``listener`` about every stage that starts or ends inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(stage: str, event: str) -> None:
    for listener in list(_listeners):
        listener(stage, event)


def stage_started(flow_or_task: Any, run: Any, state: Any) -> None:
    report(flow_or_task.name, "started")


def stage_ended(flow_or_task: Any, run: Any, state: Any) -> None:
    report(flow_or_task.name, "completed" if state.is_completed() else "failed")


# The hooks of a stage: `@flow(..., **FLOW_HOOKS)`, `@task(..., **TASK_HOOKS)`.
TASK_HOOKS = {
    "on_running": [stage_started],
    "on_completion": [stage_ended],
    "on_failure": [stage_ended],
}
FLOW_HOOKS = {**TASK_HOOKS, "on_crashed": [stage_ended]}
