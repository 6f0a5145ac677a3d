"""The image encoder of vision policies: one small convolutional network per camera, trained
from scratch with the policy (no pretrained weights can be downloaded here).

After robomimic's visual encoder (Mandlekar et al. 2021): ResNet-style basic blocks, with
GroupNorm instead of BatchNorm (as Diffusion Policy does, Chi et al. 2023: batch statistics
misbehave with small batches and at batch-1 inference), then a spatial softmax that turns each
of ``keypoints`` feature maps into the expected (x, y) of its activation (Levine et al. 2016),
then a linear layer to ``features``."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

import torch
from torch import nn

from policies.images import CameraInput


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 8, dividing the channels."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convolutions and a shortcut) with GroupNorm."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False),
            nn.GroupNorm(_groups(channels_out), channels_out),
            nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False),
            nn.GroupNorm(_groups(channels_out), channels_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.GroupNorm(_groups(channels_out), channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """robomimic's spatial softmax: a 1x1 convolution to ``keypoints`` maps, a softmax over
    each map's pixels, and the expected (x, y) in [-1, 1] under it. Returns (B, keypoints*2)."""

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints(x)
        b, k, h, w = maps.shape
        attention = torch.softmax(maps.reshape(b, k, h * w), dim=-1)
        ys = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device)
        xs = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)
        return (attention @ grid).reshape(b, k * 2)


class ConvEncoder(nn.Module):
    """(B, 3, H, W) normalised frames -> (B, features). ResNet's stem (a stride-2 convolution
    to ``channels[0]`` and a 2x max-pool, here 3x3), then one stride-2 basic block per further
    width: 96 px -> 6 x 6 maps with three widths (robomimic's ResNet-18 leaves 3 x 3 of 84 px)
    before the spatial softmax. The max-pool halves the encoder's cost at batch 1 on the CPU
    (1.1 ms against 1.9 ms for 96 px here; see bench/policy_latency.py)."""

    def __init__(self, channels: tuple[int, ...], keypoints: int, features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
            nn.GroupNorm(_groups(channels[0]), channels[0]),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        for before, after in pairwise(channels):
            layers.append(BasicBlock(before, after, stride=2))
        self.backbone = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(channels[-1], keypoints)
        self.out = nn.Linear(keypoints * 2, features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.pool(self.backbone(images)))


class CameraEncoders(nn.Module):
    """One ConvEncoder per camera of a policy config; ``forward(images)`` gives each camera's
    features in the config's camera order."""

    def __init__(self, config) -> None:
        super().__init__()
        self.cameras: tuple[CameraInput, ...] = config.cameras
        self.encoders = nn.ModuleDict(
            {
                c.name: ConvEncoder(
                    config.image_channels, config.image_keypoints, config.image_features
                )
                for c in config.cameras
            }
        )

    def forward(self, images: Mapping[str, torch.Tensor] | None) -> list[torch.Tensor]:
        images = images or {}
        features = []
        for camera in self.cameras:
            x = images.get(camera.name)
            if x is None or x.ndim != 4 or tuple(x.shape[1:]) != (3, *camera.size):
                got = None if x is None else tuple(x.shape)
                raise ValueError(
                    f"{camera.describe()}: the model takes resized, normalised float frames "
                    f"(B, 3, {camera.height}, {camera.width}), got {got}"
                )
            features.append(self.encoders[camera.name](x))
        return features


def check_vision_fields(config) -> None:
    """What every vision-capable policy config checks: its cameras and encoder sizes."""
    names = [c.name for c in config.cameras]
    if len(set(names)) != len(names):
        raise ValueError(f"camera names must be unique, got {names}")
    if not all(isinstance(c, CameraInput) for c in config.cameras):
        raise ValueError("cameras must be CameraInput values")
    if not config.image_channels or min(config.image_channels) < 1:
        raise ValueError(f"image_channels must be positive, got {config.image_channels}")
    if config.image_keypoints < 1 or config.image_features < 1:
        raise ValueError("image_keypoints and image_features must be positive")
