"""Running a shadow policy beside the served one without ever delaying the robot.

The serving path hands each observation, and the action it answered, to ``ShadowTap.offer``,
which only puts it on a bounded queue (never waits): when the shadow cannot keep up the queue
is full and the step is dropped and counted. One worker thread takes steps off the queue,
asks the shadow model for its action and appends both to the shadow log. The shadow's
actions are never sent to a robot.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.shadow.log import ShadowLogWriter, ShadowRecord

log = logging.getLogger(__name__)

# Steps waiting for the shadow; more are dropped (and counted) rather than queued.
QUEUE_STEPS = 4096
# How often an idle worker writes its counts out.
COUNTS_EVERY_S = 5.0
_STOP = object()


def _yield_the_cpu() -> None:
    """Lowest CPU priority for the calling thread (Linux: a thread's nice value is its own),
    so that on a busy machine the serving threads get the cores and the shadow falls behind
    (its queue fills and steps are dropped) instead of the robots waiting."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: the shadow runs as it is
        log.debug("the shadow's thread keeps its priority")


@dataclass(frozen=True)
class ShadowStep:
    robot_id: str
    episode_uuid: str
    step: int
    task: str
    state: np.ndarray
    # Camera name to frame, for a shadow that sees; None for state only.
    images: dict[str, np.ndarray] | None
    served_version: str
    # The first action of the chunk the robot was answered.
    served_action: np.ndarray


class ShadowTap:
    """``infer`` is the shadow model's ((state, task, images) -> action chunk); ``version``
    its name."""

    def __init__(
        self,
        version: str,
        infer: Callable[[np.ndarray, str, dict[str, np.ndarray] | None], np.ndarray],
        log_root: Path,
        *,
        queue_steps: int = QUEUE_STEPS,
    ) -> None:
        self.version = version
        self._infer = infer
        self._writer = ShadowLogWriter(log_root)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_steps)
        self.counts = {"offered": 0, "dropped": 0, "logged": 0, "failed": 0, "unattributed": 0}
        self._lock = threading.Lock()  # counts are bumped by the serving threads too
        self._thread = threading.Thread(target=self._work, name=f"shadow-{version}", daemon=True)
        self._thread.start()

    def offer(self, step: ShadowStep) -> bool:
        """Queue a step for the shadow; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(step)
        except queue.Full:
            self._count(offered=1, dropped=1)
            return False
        self._count(offered=1)
        return True

    def observe(
        self,
        *,
        robot_id: str,
        episode_uuid: str | None,
        step: int | None,
        state: np.ndarray,
        task: str,
        images: dict[str, np.ndarray] | None,
        served_version: str,
        served_action: np.ndarray,
    ) -> bool:
        """``offer`` one step by its parts. A step the robot did not place in its log (no
        episode id or step) cannot be joined with its upload: counted as unattributed."""
        if episode_uuid is None or step is None:
            self._count(unattributed=1)
            return False
        return self.offer(
            ShadowStep(
                robot_id,
                episode_uuid,
                step,
                task,
                state,
                images or None,
                served_version,
                served_action,
            )
        )

    def close(self, timeout_s: float = 30.0) -> dict[str, int]:
        """Let the shadow finish what is queued, write the log out and stop; the counts."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("shadow %s did not finish its queue in %.0f s", self.version, timeout_s)
        return dict(self.counts)

    def _count(self, **bumps: int) -> None:
        with self._lock:
            for name, n in bumps.items():
                self.counts[name] += n

    def _work(self) -> None:
        _yield_the_cpu()
        written = time.monotonic()
        try:
            while (step := self._queue.get()) is not _STOP:
                self._shadow(step)
                if self._queue.empty() and time.monotonic() - written > COUNTS_EVERY_S:
                    self._writer.write_counts(self.version, self.counts)
                    written = time.monotonic()
        finally:
            self._writer.flush()
            self._writer.write_counts(self.version, self.counts)

    def _shadow(self, step: ShadowStep) -> None:
        try:
            action = np.asarray(self._infer(step.state, step.task, step.images), np.float32)[0]
        except Exception as exc:  # a task or camera the shadow lacks: counted, never raised
            self._count(failed=1)
            log.debug(
                "shadow %s failed on %s step %d: %s", self.version, step.robot_id, step.step, exc
            )
            return
        self._writer.append(
            ShadowRecord(
                robot_id=step.robot_id,
                episode_uuid=step.episode_uuid,
                step=step.step,
                task=step.task,
                served_version=step.served_version,
                served_action=step.served_action,
                shadow_version=self.version,
                shadow_action=action,
            )
        )
        self._count(logged=1)
