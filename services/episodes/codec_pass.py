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

# How a robot encodes its cameras for upload (what the contract asks of a robot's H.264: no
# B-frames, headers on every keyframe), libx264 at its default CRF (23); the keyframe interval
# is ``UPLOAD_GOP`` frames unless the robot says otherwise.
UPLOAD_GOP = 30
UPLOAD_H264_OPTIONS = {
    "tune": "zerolatency",
    "preset": "veryfast",
    "bframes": "0",
    "repeat-headers": "1",
}


class H264Encoder:
    """RGB frames to H.264 access units, one frame in, one out: libx264 with zero latency (no
    lookahead, no B-frames). With the default ``options`` (a robot's upload, what the topic
    contract wants) its SPS/PPS are repeated on every keyframe, so any keyframe starts a
    decodable stream."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float = 30.0,
        gop: int = UPLOAD_GOP,
        options: dict[str, str] = UPLOAD_H264_OPTIONS,
    ) -> None:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = 1 / Fraction(fps).limit_denominator(1001)
        codec.options = {**options, "g": str(gop)}
        self._codec = codec
        self._n = 0

    def encode(self, frame: np.ndarray) -> bytes:
        """One (H, W, 3) uint8 RGB frame as one access unit."""
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="rgb24")
        video.pts = self._n
        self._n += 1
        if self._codec is None:
            raise ValueError("the encoder is closed")
        packets = self._codec.encode(video)
        # Zero latency: the encoder answers every frame at once, with exactly one packet.
        if len(packets) != 1:
            raise RuntimeError(f"libx264 gave {len(packets)} packets for frame {self._n - 1}")
        return bytes(packets[0])

    def close(self) -> None:
        """Ends the stream (zero latency leaves nothing to flush) and frees the encoder."""
        self._codec = None


class StreamingH264:
    """One H.264 encode (``H264Encoder``) and decode of a frame stream, one frame in, one out."""

    def __init__(self, width: int, height: int, fps: float, gop: int, options: dict[str, str]):
        self._encoder = H264Encoder(width, height, fps, gop, options)
        self._decoder = av.CodecContext.create("h264", "r")

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        decoded = self._decoder.decode(av.Packet(self._encoder.encode(frame)))
        if len(decoded) != 1:  # a zero-latency stream decodes every frame at once
            raise RuntimeError(f"the codec pass decoded {len(decoded)} frames for one")
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
        self._store_gop = video_format.gop
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
            camera_hz, control_hz = self._rates
            self._upload = StreamingH264(width, height, camera_hz, UPLOAD_GOP, UPLOAD_H264_OPTIONS)
            self._store = StreamingH264(
                width, height, control_hz, self._store_gop, self._store_options
            )
        return self._upload(frame)

    def store(self, frame: np.ndarray) -> np.ndarray:
        """The frame a control step holds (an ``upload``-ed one), after ingest's encode and
        a decode."""
        if self._store is None:
            raise ValueError("no frame uploaded yet: a step holds the latest uploaded frame")
        return self._store(frame)
