"""Camera inputs of a policy: what it reads, how frames become its input, and their statistics.

A camera ``<name>`` is the store's feature ``observation.images.<name>``. Frames arrive as a
camera gives them (uint8 H x W x 3); ``resize_frames`` is the one place they become the
policy's input size, in training and on the robot alike, so both see the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional

# How the frames a policy was trained on were made: "h264" = decoded from the store's H.264
# video, "raw" = an uncompressed render. A policy trained on one sees the other's artefacts.
ENCODINGS = ("h264", "raw")
# A constant channel or state coordinate (std 0) is left centred but unscaled, instead of
# dividing by zero.
MIN_STD = 1e-6


@dataclass(frozen=True)
class CameraInput:
    # Camera name: the policy reads the feature ``observation.images.<name>``.
    name: str
    # The policy's input height in pixels (frames are resized to it).
    height: int
    # The policy's input width in pixels.
    width: int
    # How the training frames were made (one of ENCODINGS).
    encoding: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a camera needs a name")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"camera {self.name!r}: size must be positive, got {self.size}")
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"camera {self.name!r}: encoding must be one of {ENCODINGS}, got {self.encoding!r}"
            )

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def describe(self) -> str:
        """How the checkpoint names this input in error messages."""
        return f"camera {self.name!r} ({self.height}x{self.width} px input, {self.encoding} frames)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "height": self.height,
            "width": self.width,
            "encoding": self.encoding,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CameraInput:
        return cls(
            name=str(data["name"]),
            height=int(data["height"]),
            width=int(data["width"]),
            encoding=str(data["encoding"]),
        )


def resize_frames(frames: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) frames -> float32 (B, 3, height, width) in [0, 1].

    Bilinear with antialiasing (an area-like filter when shrinking, so small objects do not
    alias away), on the uint8 pixels as an image library resizes them: PyTorch's channels-last
    uint8 kernel is about 15x faster than resizing floats (0.4 ms against 6 ms for one 480 px
    frame to 96 px here), at the price of rounding to whole pixel values. Frames already at the
    size are only converted."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames of shape (H, W, 3) or (B, H, W, 3), "
            f"got {x.dtype} {tuple(x.shape)}"
        )
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2)  # (B, 3, H, W) viewed channels-last, as the fast kernel wants
    if x.shape[-2:] != (height, width):
        x = functional.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
    return (x.to(torch.float32) / 255.0).contiguous()


def random_shift(
    images: torch.Tensor, pad: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DrQ's augmentation (Kostrikov et al. 2020, also Diffusion Policy's): replicate-pad each
    image by ``pad`` pixels and crop it back at a random offset, one offset per sample.
    ``images``: (B, C, H, W); ``pad`` 0 returns them unchanged."""
    if pad < 0:
        raise ValueError(f"pad must be at least 0, got {pad}")
    if pad == 0:
        return images
    b, _, h, w = images.shape
    padded = functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    # The offsets are drawn where the generator lives, so a seeded CPU generator gives the
    # same shifts whatever device the images are on.
    device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=generator, device=device)
    offsets = offsets.to(images.device)
    rows = offsets[0] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing moves the indexed axes first: (B, H, W, C) -> (B, C, H, W).
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ImageStats:
    # Per-channel (RGB) mean of the camera's frames on the 0-1 scale, shape (3,).
    mean: np.ndarray
    # Per-channel standard deviation on the 0-1 scale, shape (3,), at least MIN_STD.
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.maximum(np.asarray(self.std, np.float32).reshape(-1), MIN_STD)
        if mean.shape != (3,) or std.shape != (3,):
            raise ValueError(f"image stats need 3 channels, got {mean.shape} and {std.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_frames(cls, frames: np.ndarray) -> ImageStats:
        """From a sample of uint8 (N, H, W, 3) frames."""
        pixels = np.asarray(frames).reshape(-1, 3).astype(np.float64) / 255.0
        return cls(mean=pixels.mean(0), std=pixels.std(0))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) on the 0-1 scale -> centred and scaled per channel."""
        mean = torch.from_numpy(self.mean).to(images.dtype)[:, None, None]
        std = torch.from_numpy(self.std).to(images.dtype)[:, None, None]
        return (images - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageStats:
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))


def check_frames(
    cameras: tuple[CameraInput, ...],
    images: Mapping[str, Any] | None,
    batch: int | None = None,
) -> dict[str, np.ndarray]:
    """The frames of an observation, refused unless they are exactly the policy's cameras,
    each uint8 (H, W, 3) (``batch`` None) or (batch, H, W, 3). Any camera resolution is
    accepted: ``resize_frames`` brings it to the policy's input size."""
    images = dict(images or {})
    reads = ", ".join(c.describe() for c in cameras) or "no cameras (state only)"
    unknown = sorted(set(images) - {c.name for c in cameras})
    if unknown:
        raise ValueError(f"unknown camera {unknown[0]!r}: this policy reads {reads}")
    expected = "(H, W, 3)" if batch is None else f"({batch}, H, W, 3)"
    checked = {}
    for camera in cameras:
        if camera.name not in images:
            got = ", ".join(repr(n) for n in images) or "none"
            raise ValueError(f"missing {camera.describe()} (cameras given: {got})")
        frame = images[camera.name]
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        ndim = 3 if batch is None else 4
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != ndim
            or frame.shape[-1] != 3
            or (batch is not None and frame.shape[0] != batch)
        ):
            raise ValueError(
                f"{camera.describe()}: expected uint8 frames of shape {expected}, "
                f"got {dtype} {shape}"
            )
        checked[camera.name] = frame
    return checked
