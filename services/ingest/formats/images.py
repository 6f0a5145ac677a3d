"""Camera messages as frame payloads, whatever schema and encoding carried them.

ROS's ``sensor_msgs/(msg/)Image`` and ``CompressedImage``, and Foxglove's
``CompressedImage`` and ``CompressedVideo`` (``foxglove_msgs/msg/...`` in ROS 2,
``foxglove.…`` in protobuf or JSON MCAP), decoded by the reader of their log into objects
with attributes (CDR, protobuf) or dicts (JSON, where ``data`` is base64 as Foxglove's JSON
schemas say). ``services/episodes/cameras.py`` decodes the payloads into frames.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from services.episodes.cameras import FrameError, Payload

IMAGE_SCHEMAS = ("Image", "CompressedImage", "CompressedVideo")
# Schemas a camera topic may carry that Flywheel does not read yet.
OUT_OF_SCOPE = {
    "CameraInfo": "camera calibration (CameraInfo) is out of scope for now",
    "CameraCalibration": "camera calibration (CameraCalibration) is out of scope for now",
    "RawImage": "foxglove.RawImage is not read yet; log sensor_msgs/Image or a compressed form",
    "PointCloud2": "point clouds are out of scope for now",
}


def schema_kind(schema_name: str) -> str:
    """The message type's last name: ``sensor_msgs/msg/Image`` and ``foxglove.CompressedVideo``
    give ``Image`` and ``CompressedVideo``."""
    return schema_name.replace("/", ".").rsplit(".", 1)[-1]


def check_schema(schema_name: str, topic: str) -> None:
    """Raises FrameError when a camera topic's schema is not one Flywheel reads as frames."""
    kind = schema_kind(schema_name)
    if kind in OUT_OF_SCOPE:
        raise FrameError(f"camera topic {topic} carries {schema_name}: {OUT_OF_SCOPE[kind]}")
    if kind not in IMAGE_SCHEMAS:
        raise FrameError(
            f"camera topic {topic} carries {schema_name}, which is none of the image messages "
            "Flywheel reads (sensor_msgs Image, CompressedImage; foxglove CompressedImage, "
            "CompressedVideo)"
        )


def payload(message: Any, schema_name: str) -> Payload:
    """The frame payload of one decoded camera message."""
    kind = schema_kind(schema_name)
    data = _bytes(_get(message, "data"))
    if kind == "Image":
        return Payload(
            "raw",
            data,
            width=int(_get(message, "width")),
            height=int(_get(message, "height")),
            encoding=str(_get(message, "encoding")),
            step=int(_get(message, "step", 0) or 0),
        )
    fmt = str(_get(message, "format")).lower()
    if kind == "CompressedVideo":
        if fmt != "h264":
            raise FrameError(f"CompressedVideo format {fmt!r}: Flywheel reads h264 (Annex B)")
        return Payload("h264", data)
    # ROS writes formats like "jpeg", "png" or "bgr8; jpeg compressed bgr8".
    for name in ("jpeg", "jpg", "png"):
        if name in fmt:
            return Payload("png" if name == "png" else "jpeg", data)
    raise FrameError(f"CompressedImage format {fmt!r}: Flywheel reads jpeg and png")


def stamp_ns(message: Any) -> int | None:
    """A camera message's own time: ROS ``header.stamp`` or Foxglove ``timestamp``."""
    header = _get(message, "header", None)
    stamp = _get(header, "stamp", None) if header is not None else _get(message, "timestamp", None)
    if stamp is None:
        return None
    seconds = _get(stamp, "sec", None)
    if seconds is None:
        seconds = _get(stamp, "seconds", 0)
    nanos = _get(stamp, "nanosec", None)
    if nanos is None:
        nanos = _get(stamp, "nsec", None)
    if nanos is None:
        nanos = _get(stamp, "nanos", 0)
    return int(seconds) * 1_000_000_000 + int(nanos)


_MISSING = object()


def _get(message: Any, name: str, default: Any = _MISSING) -> Any:
    if isinstance(message, dict):
        value = message.get(name, default)
    else:
        value = getattr(message, name, default)
    if value is _MISSING:
        raise FrameError(f"camera message has no field {name!r}")
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):  # Foxglove's JSON schemas carry bytes as base64
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise FrameError(f"image data is not base64 ({exc})") from exc
    if hasattr(value, "tobytes"):  # numpy arrays from the CDR decoders
        return value.tobytes()
    return bytes(value)
