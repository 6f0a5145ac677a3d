"""The twin's tasks: Meta-World environments and a tiny numpy task for tests.

Adding a Meta-World task is one line at the bottom of this file. Every task exposes the
same small interface (``SimEnv``), including its scripted expert, which plays the human
operator, and the part of the workspace that lab demonstrations cover: the field is wider
than the lab, which is what gives the flywheel something to learn.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable

import numpy as np

from services.twin.env import SimEnv, StepResult
from services.twin.render import SceneCameras
from services.twin.toy import ToyReach

# Meta-World's scripted experts warn on every episode that their gains are high; they are.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")


class MetaWorldEnv:
    """A Meta-World v3 task, seeded the way Meta-World needs, with its scripted expert."""

    state_dim = 39
    action_dim = 4
    # A robot's camera name -> Meta-World's camera, and whether it is mounted upside down
    # (Meta-World's corner cameras look at the table with their image-up axis at the floor).
    CAMERAS = {
        "front": ("corner", True),
        "side": ("corner2", True),
        "top": ("topview", False),
        "wrist": ("gripperPOV", False),
    }
    camera_names = tuple(CAMERAS)

    def __init__(
        self, task: str, env_name: str, expert: type, max_steps: int, lab_axis: int
    ) -> None:
        import metaworld

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            benchmark = metaworld.MT1(env_name, seed=0)
            self._env = benchmark.train_classes[env_name]()
            self._env.set_task(benchmark.train_tasks[0])
        # Meta-World ignores reset(seed=...): a seeded random vector, unfrozen, then seed().
        self._env.seeded_rand_vec = True
        self._env._freeze_rand_vec = False
        self._expert = expert()
        self.task = task
        self.max_steps = max_steps
        self.control_hz = 1.0 / self._env.dt
        self._lab_axis = lab_axis
        self._initial: np.ndarray | None = None

    def reset(self, seed: int) -> np.ndarray:
        self._env.seed(int(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, _ = self._env.reset()
        self._initial = state.astype(np.float32)
        return self._initial

    def step(self, action: np.ndarray) -> StepResult:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        # Meta-World v3 rewards are shaped in [0, 10] and rise as the task advances.
        return StepResult(
            state.astype(np.float32), float(reward), float(reward) / 10.0, bool(info["success"])
        )

    def expert_action(self, state: np.ndarray) -> np.ndarray:
        return np.asarray(self._expert.get_action(state), dtype=np.float32)

    def open_cameras(self, names: tuple[str, ...], px: int) -> SceneCameras:
        return SceneCameras(self._env.model, self._env.data, self.CAMERAS, names, px)

    def in_lab_workspace(self) -> bool:
        # The lab's table covers the left half of the workspace along this state coordinate.
        return bool(self._initial[self._lab_axis] < 0.0)


_TASKS: dict[str, Callable[[], SimEnv]] = {}


def register_task(name: str, factory: Callable[[], SimEnv]) -> None:
    if name in _TASKS:
        raise ValueError(f"task {name!r} is registered twice")
    _TASKS[name] = factory


def metaworld_task(
    env_name: str, expert: str, *, max_steps: int, lab_axis: int = 4
) -> Callable[[], SimEnv]:
    """A factory for a Meta-World task; ``lab_axis`` is the state coordinate split by the lab
    (4: the object's x position; 36: the goal's x position)."""

    def factory() -> SimEnv:
        from metaworld import policies

        return MetaWorldEnv(
            _task_name(env_name), env_name, getattr(policies, expert), max_steps, lab_axis
        )

    return factory


def _task_name(env_name: str) -> str:
    return env_name.removesuffix("-v3")


def known_tasks() -> list[str]:
    return sorted(_TASKS)


def make_env(task: str) -> SimEnv:
    if task not in _TASKS:
        close = difflib.get_close_matches(task, _TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {task!r} (known: {', '.join(known_tasks())}){hint}")
    return _TASKS[task]()


register_task("toy-reach", ToyReach)
register_task(
    "pick-place", metaworld_task("pick-place-v3", "SawyerPickPlaceV3Policy", max_steps=150)
)
register_task("push", metaworld_task("push-v3", "SawyerPushV3Policy", max_steps=150))
register_task(
    "reach", metaworld_task("reach-v3", "SawyerReachV3Policy", max_steps=100, lab_axis=36)
)
register_task(
    "drawer-open", metaworld_task("drawer-open-v3", "SawyerDrawerOpenV3Policy", max_steps=150)
)
