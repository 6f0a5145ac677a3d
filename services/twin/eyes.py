"""What a vision policy sees: its cameras' frames at each control step, as its training
frames were made.

A robot's camera gives a new frame every few control steps (``CameraSetup.every``); a step
between two frames holds the latest, as ingest aligns them in the store. A policy trained on
frames decoded from the store's video (encoding "h264") gets each frame through the same two
encodes (``CodecPass``); one trained on raw renders gets the frame as rendered. The simulated
robots and closed-loop evaluation both see through ``PolicyEyes``, so a policy is evaluated on
the pixels it was trained on; ``bench/vision_pixels.py`` measures the difference it makes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from services.episodes.cameras import VideoFormat
from services.episodes.codec_pass import CodecPass
from services.twin.env import SimEnv
from services.twin.render import CameraSetup

if TYPE_CHECKING:  # policies brings torch, which the twin's other users do not need
    from policies.images import CameraInput

# The images of one control step, or None for a policy that reads none.
Look = Callable[[int], dict[str, np.ndarray] | None]


class PolicyEyes:
    """One episode of a policy's cameras: ``see`` each control step's frames."""

    def __init__(
        self,
        cameras: tuple[CameraInput, ...],
        setup: CameraSetup,
        control_hz: float,
        video_format: VideoFormat,
    ) -> None:
        missing = [c.name for c in cameras if c.name not in setup.names]
        if missing:
            raise ValueError(
                f"the policy reads camera {missing[0]!r}, which the robots do not record "
                f"(they record {', '.join(setup.names) or 'none'}: FLYWHEEL_SIM_CAMERAS)"
            )
        self._passes = {
            c.name: CodecPass(video_format, setup.hz, control_hz) if c.encoding == "h264" else None
            for c in cameras
        }
        self._held: dict[str, np.ndarray] = {}

    def see(self, rendered: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """The policy's frames for this step: ``rendered`` are the frames the cameras took at
        this step, or None when they took none (the latest are held)."""
        if rendered is not None:
            for name, codec in self._passes.items():
                frame = rendered[name]
                self._held[name] = codec.upload(frame) if codec is not None else frame
        if not self._held:
            raise ValueError("no camera frame yet: an episode's first step takes one")
        return {
            name: codec.store(self._held[name]) if codec is not None else self._held[name]
            for name, codec in self._passes.items()
        }


@contextlib.contextmanager
def policy_cameras(
    env: SimEnv,
    cameras: tuple[CameraInput, ...],
    setup: CameraSetup | None,
    video_format: VideoFormat,
) -> Iterator[Callable[[], Look]]:
    """The twin's cameras for a policy that reads ``cameras``: yields a function that starts
    an episode's ``Look`` (each call to it, a step's frames). A state-only policy's Look gives
    None and renders nothing."""
    if not cameras:
        yield lambda: lambda step: None
        return
    if setup is None:
        raise ValueError(
            "this is a vision policy and the simulated robots have no cameras "
            "(FLYWHEEL_SIM_CAMERAS is empty)"
        )
    names = tuple(c.name for c in cameras)
    lacking = [n for n in names if n not in env.camera_names]
    if lacking:
        raise ValueError(
            f"task {env.task!r} has no camera {lacking[0]!r} (it has "
            f"{', '.join(env.camera_names) or 'none'})"
        )
    every = setup.every(env.control_hz)
    with env.open_cameras(names, setup.px) as scene:

        def start() -> Look:
            eyes = PolicyEyes(cameras, setup, env.control_hz, video_format)
            return lambda step: eyes.see(scene.render() if step % every == 0 else None)

        yield start
