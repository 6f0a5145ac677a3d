"""The simulated robots' cameras: MuJoCo's offscreen renderer, headless, on the CPU.

MuJoCo renders through OpenGL; without a display that is EGL or OSMesa, both Mesa's software
rasterisers here (Debian: ``libegl-mesa0`` + ``libgl1-mesa-dri``, or ``libosmesa6``; ``make
render-libs`` installs them). ``gl_backend`` finds the first that renders, in a child process
so that a broken driver cannot take this one down, and hands it to MuJoCo.

Meta-World's scenes are set up for pictures: shadows, reflections, a skybox and 4x
multisampling. On a CPU they cost many times the frame itself (``bench/render.py`` prints
both); a policy's 64-96 px camera needs none of them, so ``SceneCameras`` turns them off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.config import FleetSettings

BACKENDS = ("egl", "osmesa")
INSTALL_HINT = (
    "install Mesa's EGL (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) "
    "or OSMesa (apt-get install libosmesa6); `make render-libs` does it. The simulated fleet "
    "runs without cameras with FLYWHEEL_SIM_CAMERAS='[]'"
)
# The scene's extras that cost a CPU renderer most and a small policy camera nothing.
_EXTRAS_OFF = ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX")

# Renders one frame of a one-geom model: what the probe of a backend runs.
_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=".1"/></worldbody></mujoco>')
renderer = mujoco.Renderer(model, 8, 8)
renderer.update_scene(mujoco.MjData(model))
renderer.render()
renderer.close()
"""


class RenderError(RuntimeError):
    """No OpenGL backend renders here; the message says what to install."""


def find_backend(backends: tuple[str, ...] = BACKENDS) -> str:
    """The first of ``backends`` that renders a frame here, each tried in a child process;
    RenderError saying what to install when none does."""
    failures = []
    for backend in backends:
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        try:
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{backend}: no frame within 120 s")
            continue
        if probe.returncode == 0:
            return backend
        last = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        failures.append(f"{backend}: {last}")
    raise RenderError(f"no OpenGL backend renders here ({'; '.join(failures)}): {INSTALL_HINT}")


_chosen: list[str] = []


def gl_backend(backends: tuple[str, ...] = BACKENDS) -> str:
    """The backend this process renders with: the first of ``backends`` that works, chosen
    once (MuJoCo cannot change it afterwards)."""
    # A backend the process was started with (MuJoCo's and PyOpenGL's own variables, which
    # they read at import) is the one to use: MuJoCo may have set itself up with it already.
    started_with = os.environ.get("MUJOCO_GL") or os.environ.get("PYOPENGL_PLATFORM")
    if backends == BACKENDS and started_with in BACKENDS:
        backends = (started_with,)
    if not _chosen:
        backend = find_backend(backends)
        _use(backend)
        _chosen.append(backend)
    return _chosen[0]


def _use(backend: str) -> None:
    """Make MuJoCo's renderers use ``backend``, whether or not MuJoCo is imported yet."""
    # MuJoCo picks its backend from MUJOCO_GL when it is first imported, and PyOpenGL its
    # platform from PYOPENGL_PLATFORM when it is; these are theirs to read, set for them.
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    if os.environ["PYOPENGL_PLATFORM"] != backend:
        raise RenderError(
            f"PYOPENGL_PLATFORM is {os.environ['PYOPENGL_PLATFORM']!r}, but the backend that "
            f"renders here is {backend!r}: unset it"
        )
    os.environ["MUJOCO_GL"] = backend
    from mujoco import gl_context

    if backend == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    # Imported earlier without MUJOCO_GL, MuJoCo would open a window (GLFW): the Renderer
    # reads its context class from this module when it is made, so the choice still holds.
    gl_context.GLContext = GLContext


@dataclass(frozen=True)
class CameraSetup:
    """Which cameras a simulated robot records, how large, how often."""

    # The robot's camera names (``observation.images.<name>`` in the store).
    names: tuple[str, ...]
    # Frames are square, this many pixels a side.
    px: int = 64
    # Frames per second (at most the control rate: one frame per control step).
    hz: float = 20.0

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"cameras named twice: {self.names}")
        if not 16 <= self.px <= 480:
            raise ValueError(f"camera size {self.px} px: choose 16 to 480")
        if not self.hz > 0:
            raise ValueError("camera rate must be positive")

    def every(self, control_hz: float) -> int:
        """Control steps between two frames."""
        return max(1, round(control_hz / self.hz))

    @classmethod
    def from_settings(cls, settings: FleetSettings) -> CameraSetup | None:
        """The simulated robots' cameras as the settings name them (FLYWHEEL_SIM_CAMERAS...);
        None when they name none."""
        if not settings.sim_cameras:
            return None
        return cls(settings.sim_cameras, settings.sim_camera_px, settings.sim_camera_hz)


class SceneCameras:
    """Named cameras of one MuJoCo scene, rendered with one offscreen renderer.

    ``mounts`` maps each name to the model's camera and whether that camera is mounted upside
    down (its frames are turned half a turn, as a real camera's driver would be set to).
    """

    def __init__(
        self,
        model,
        data,
        mounts: Mapping[str, tuple[str, bool]],
        names: Sequence[str],
        px: int,
        *,
        fast: bool = True,
    ) -> None:
        unknown = [name for name in names if name not in mounts]
        if unknown:
            raise ValueError(f"unknown camera {unknown[0]!r} (known: {', '.join(sorted(mounts))})")
        gl_backend()
        import mujoco

        self._data = data
        self._cameras = [(name, *mounts[name]) for name in names]
        if fast:
            # Multisampling is fixed when the render context is made, from the model.
            model.vis.quality.offsamples = 0
        self._renderer = mujoco.Renderer(model, px, px)
        if fast:
            for flag in _EXTRAS_OFF:
                self._renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0

    def render(self) -> dict[str, np.ndarray]:
        """Each camera's view of the scene now: (px, px, 3) uint8 RGB."""
        frames = {}
        for name, camera, upside_down in self._cameras:
            self._renderer.update_scene(self._data, camera=camera)
            frame = self._renderer.render()
            frames[name] = np.ascontiguousarray(frame[::-1, ::-1]) if upside_down else frame
        return frames

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> SceneCameras:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
