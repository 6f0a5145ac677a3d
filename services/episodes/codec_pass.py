"""A camera's frames through the codecs the stored frames went through, as they stream.

A vision policy is trained on frames decoded from the episode store's video, which went
through two lossy encodes: the robot's H.264 upload, then ingest's encode into the store
(``VideoFormat``). A frame rendered in the twin, or taken from the robot's camera, has none
of their artefacts. ``CodecPass`` gives a frame the same two generations, one frame in and
one out (zero-latency encoders: no lookahead, no B-frames), so that a policy trained on
decoded frames is evaluated and served on frames like them. ``bench/vision_pixels.py``
measures how close that brings them to the stored frames.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from services.episodes.cameras import VideoFormat

# How the simulated robots encode their cameras for upload (and what the contract asks of a
# robot's H.264: no B-frames, headers on every keyframe): libx264 at its default CRF (23).
UPLOAD_H264_OPTIONS = {
    "tune": "zerolatency",
    "preset": "veryfast",
    "bframes": "0",
    "repeat-headers": "1",
    "g": "30",
}


class StreamingH264:
    """One H.264 encode and decode of a frame stream, one frame in, one frame out."""

    def __init__(self, options: dict[str, str], width: int, height: int, fps: float) -> None:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = 1 / Fraction(fps).limit_denominator(1001)
        encoder.options = dict(options)
        self._encoder = encoder
        self._decoder = av.CodecContext.create("h264", "r")
        self._n = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="rgb24")
        video.pts = self._n
        self._n += 1
        decoded = [f for p in self._encoder.encode(video) for f in self._decoder.decode(p)]
        if len(decoded) != 1:  # a zero-latency pair answers every frame at once
            raise RuntimeError(f"the codec pass gave {len(decoded)} frames for frame {self._n - 1}")
        return decoded[0].to_ndarray(format="rgb24")


def _store_options(video_format: VideoFormat) -> dict[str, str]:
    """The store's encoder settings, made zero-latency (the store's own encoder may reorder
    frames; a robot cannot wait for a later frame)."""
    if video_format.codec != "libx264":
        raise ValueError(
            f"frames cannot be passed through {video_format.codec} as they stream here: a "
            "vision policy is evaluated and served on H.264 frames only "
            "(FLYWHEEL_VIDEO_CODEC=libx264, the default)"
        )
    return {**video_format.options(), "tune": "zerolatency", "bframes": "0"}


class CodecPass:
    """One camera's frames as the store gives them back, in two calls, as the frames went:
    ``upload`` each new camera frame (the robot's encode, at the camera's rate), then
    ``store`` the frame each control step holds (ingest's encode, one frame per step). One
    per camera and episode: the codecs predict a frame from the ones before it."""

    def __init__(self, video_format: VideoFormat, camera_hz: float, control_hz: float) -> None:
        self._store_options = _store_options(video_format)
        self._rates = (camera_hz, control_hz)
        self._upload: StreamingH264 | None = None
        self._store: StreamingH264 | None = None

    def upload(self, frame: np.ndarray) -> np.ndarray:
        """A new frame from the camera, after the robot's encode and a decode."""
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a camera frame is uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._upload is None:
            height, width = frame.shape[:2]
            if height % 2 or width % 2:
                raise ValueError(f"H.264 (yuv420p) needs even frame sides, got {width}x{height}")
            self._upload = StreamingH264(UPLOAD_H264_OPTIONS, width, height, self._rates[0])
            self._store = StreamingH264(self._store_options, width, height, self._rates[1])
        return self._upload(frame)

    def store(self, frame: np.ndarray) -> np.ndarray:
        """The frame a control step holds (an ``upload``-ed one), after ingest's encode and
        a decode."""
        if self._store is None:
            raise ValueError("no frame uploaded yet: a step holds the latest uploaded frame")
        return self._store(frame)
