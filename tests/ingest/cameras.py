"""Camera frames for the ingest tests: small pictures that say which frame they are, as raw
pixels, JPEG, PNG and H.264 access units (what robots log)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.ingest.formats.mcap_writer import H264Encoder

WIDTH, HEIGHT = 32, 24


def frame(i: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Frame ``i``: its red level counts frames, a bright row moves down."""
    pixels = np.full((height, width, 3), 60, np.uint8)
    pixels[..., 0] = 40 + (i * 9) % 200
    pixels[i % height, :, 1] = 250
    return pixels


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def h264(frames: list[np.ndarray], fps: float = 30.0, gop: int = 30) -> list[bytes]:
    """One access unit per frame, the first a keyframe with its SPS/PPS."""
    height, width = frames[0].shape[:2]
    encoder = H264Encoder(width, height, fps, gop=gop)
    try:
        return [encoder.encode(f) for f in frames]
    finally:
        encoder.close()


def red(pixels: np.ndarray) -> float:
    """The frame's red level, which says which frame it is (``frame``)."""
    return float(pixels[..., 0].mean())
