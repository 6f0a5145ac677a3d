"""openpi's wire format: msgpack, with numpy arrays as maps of their bytes, dtype and shape.

Byte for byte what ``openpi_client.msgpack_numpy`` writes and reads, so a robot running
``openpi-client`` talks to this server unchanged: an array is ``{b"__ndarray__": True,
b"data": <bytes>, b"dtype": "<f4", b"shape": [..]}`` and a numpy scalar ``{b"__npgeneric__":
True, b"data": <item>, b"dtype": ".."}``.

Unlike openpi's reader, this one trusts nothing it is sent: only plain numeric dtypes are
accepted (an object dtype read from raw bytes would be pointers), and data that does not fill
its shape is refused, with a message that says which.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

# bool, signed and unsigned integers, floats: what observations and images are made of.
NUMERIC_KINDS = frozenset("biuf")


class DecodeError(ValueError):
    """A message that is not openpi's msgpack, or carries an array it may not."""


def _pack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": obj.tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        shape = obj.get(b"shape")
        data = obj.get(b"data")
        if not isinstance(data, bytes) or not isinstance(shape, list | tuple):
            raise DecodeError("an array needs bytes 'data' and a list 'shape'")
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise DecodeError(f"array shape {list(shape)} is not a list of sizes")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(data):
            raise DecodeError(
                f"array of shape {list(shape)} and dtype {dtype.str} needs "
                f"{int(np.prod(shape, dtype=np.int64)) * dtype.itemsize} bytes, got {len(data)}"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj:
        return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
    return obj


def _dtype(value: Any) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise DecodeError(f"unknown array dtype {value!r}") from exc
    if dtype.kind not in NUMERIC_KINDS:
        raise DecodeError(f"array dtype {dtype.str} is not numeric (bool, int, uint, float)")
    return dtype


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack)


def unpackb(data: bytes) -> Any:
    """A message as openpi's client packs it; DecodeError for anything else."""
    try:
        return msgpack.unpackb(data, object_hook=_unpack)
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a msgpack message: {exc}") from exc
