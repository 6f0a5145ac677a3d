"""Camera frames for the ingest tests: small pictures that say which frame they are, as raw
pixels, JPEG, PNG and H.264 access units (what robots log)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.ingest.formats.mcap_writer import H264Encoder

WIDTH, HEIGHT = 32, 24
# Frames repeat their colours after this many.
CYCLE = 24


def frame(i: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Frame ``i``: red rises and blue falls with ``i`` (modulo ``CYCLE``; far enough apart to
    tell frames apart through two lossy codecs), a bright row moves down."""
    pixels = np.full((height, width, 3), 60, np.uint8)
    pixels[..., 0] = 20 + 8 * (i % CYCLE)
    pixels[..., 2] = 220 - 8 * (i % CYCLE)
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


def index(pixels: np.ndarray, mono: bool = False) -> int:
    """Which frame (``frame``, modulo ``CYCLE``) a decoded picture is, from its red and blue
    levels (from its grey level for a mono8 picture of the red channel)."""
    red, blue = float(pixels[..., 0].mean()), float(pixels[..., 2].mean())
    if mono:
        return round((red - 20) / 8)
    return round(((red - 20) + (220 - blue)) / 16)
