"""The mapped fields of ROS messages: read from decoded messages, or from a topic's raw
payloads in batches.

A state or action topic keeps its messages' raw payloads as they stream past; once the log has
been read, ``decode_series`` decodes them. Every run of messages that share the byte layout of
their first message (``fixed_layout.py``) has its mapped numbers (and its header stamps, on the
header clock) read in one numpy pass; the first message of each layout, and every message of
another layout, is decoded by the reference decoder (``mcap-ros2-support`` or ``rosbags``) and
read field by field, with every check of the message-by-message path, in the order logged. So
the arrays, the names and the errors are those of decoding every message one at a time.

Before a layout is trusted, its template is read both ways and must give the same numbers and
stamp; where they differ, or the message cannot be walked, the topic is decoded message by
message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from services.episodes.model import LogFormatError
from services.ingest.formats.fixed_layout import (
    Field,
    Layout,
    UnsupportedLayout,
    layout,
    ros2msg_type,
    rosbags_type,
)

STAMP_PATHS = ("header.stamp.sec", "header.stamp.nanosec")
# Bags' typestores by their message definitions: at most this many kept (see open_bag).
TYPESTORES = 64


@dataclass(frozen=True, eq=False)
class Codec:
    """How one channel's payloads decode."""

    # The reference decoder: payload -> message; raises the container's error for a bad one.
    decode: Callable[[bytes], Any]
    # The message type as the reference decoder reads it; None: decode message by message.
    message: tuple[Field, ...] | None
    # CDR (ROS 2) or ROS 1 serialisation.
    cdr: bool = True


@dataclass
class Payloads:
    """A state or action topic's messages as they streamed past, not yet decoded."""

    times: list[int] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    # Per message, its channel's codec (a topic may have several channels).
    codecs: list[Codec] = field(default_factory=list)


@dataclass
class Decoded:
    """A topic's decoded messages: times, and values message by message or in batches."""

    # Per message, ns: its log time, or its header stamp on the header clock.
    times: np.ndarray
    # Per message, its fields' values as decoded, or None where a batch holds them.
    values: list[Any]
    # (message indices, one (messages, size) float64 array per field) per batch.
    batches: list[tuple[np.ndarray, list[np.ndarray]]]
    # How many values each field has, and one name per value (from the first message).
    sizes: tuple[int, ...] | None = None
    names: tuple[str, ...] | None = None


def mcap_codec(topic: str, schema: Any, decode: Callable[[bytes], Any]) -> Codec:
    """A CDR channel's codec: its messages are decoded by ``decode`` (mcap-ros2-support), and
    in batches where its ros2msg schema can be walked."""

    def reference(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # a message cut short or not of its schema
            raise LogFormatError(f"{topic}: undecodable message ({exc})") from exc

    return Codec(reference, _ros2msg(schema.name, schema.data) if schema else None)


@lru_cache(maxsize=256)
def _ros2msg(name: str, data: bytes) -> tuple[Field, ...] | None:
    """A ros2msg schema's fields, read once per process; None where they cannot be."""
    try:
        return ros2msg_type(name, data.decode())
    except Exception:  # noqa: BLE001 - any schema it cannot read is decoded one by one
        return None


_typestores: dict[tuple, Any] = {}


def open_bag(path: Path) -> Any:
    """rosbags' ``AnyReader`` on one bag (use it as a context manager), with the typestore of
    the first bag of this process that had the same message definitions and digests.

    AnyReader makes a typestore for every bag: it parses each type's definition, makes its
    classes, checks the digests, and generates each type's decoder the first time one is
    decoded; for a short bag that costs more than reading its messages. A bag whose
    definitions this process has not met is opened by AnyReader as ever (its checks, its
    errors); one whose definitions it has met reuses that typestore, whose decoders exist."""
    from rosbags.highlevel import AnyReader

    class Reader(AnyReader):
        def _open(self) -> None:
            assert self.stack
            for reader in self.readers:
                self.stack.enter_context(reader)
            connections = [c for reader in self.readers for c in reader.connections]
            key = (
                self.is2,
                tuple(sorted({(c.msgtype, str(c.msgdef), c.digest) for c in connections})),
            )
            typestore = _typestores.get(key)
            if typestore is None:
                with AnyReader(self.paths) as plain:  # rosbags' own parsing and checks
                    typestore = plain.typestore
                if len(_typestores) >= TYPESTORES:
                    _typestores.clear()
                _typestores[key] = typestore
            self.connections, self.typestore = connections, typestore

    return Reader([Path(path)])


def bag_codec(reader: Any, msgtype: str) -> Codec:
    """A bag connection's codec: the open reader (``open_bag``) decodes, and batches where
    the type can be walked."""
    try:
        message = rosbags_type(reader.typestore, msgtype)
    except (UnsupportedLayout, KeyError):
        message = None
    return Codec(lambda data: reader.deserialize(data, msgtype), message, cdr=reader.is2)


def decode_series(
    role: str, topic: str, paths: tuple[str, ...], payloads: Payloads, header_clock: bool
) -> Decoded:
    """Decode a state or action topic's payloads (see the module's docstring)."""
    n = len(payloads.data)
    out = Decoded(times=np.asarray(payloads.times, dtype=np.int64), values=[None] * n, batches=[])
    batched = np.zeros(n, dtype=bool)
    for members in _channels(payloads.codecs):
        first = int(members[0])
        plan = _plan(payloads.codecs[first], payloads.data[first], paths, topic, header_clock)
        if plan is None or len(members) < 2:
            continue
        rest = members[1:]
        if len(members) == n:  # one channel, as nearly always
            same, rows = plan.matching(payloads.data[1:])
        else:
            same, rows = plan.matching([payloads.data[i] for i in rest.tolist()])
        which = rest[same]
        batched[which] = True
        columns = [plan.leaves[path].values(rows) for path in paths]
        out.batches.append((which, columns))
        if header_clock and STAMP_PATHS[0] in plan.leaves:
            sec, nanosec = (plan.leaves[p].integers(rows) for p in STAMP_PATHS)
            out.times[which] = sec * 1_000_000_000 + nanosec
    for i in np.flatnonzero(~batched).tolist():
        message = payloads.codecs[i].decode(payloads.data[i])
        if header_clock:
            out.times[i] = stamp(message, int(out.times[i]))
        value = tuple(field_value(message, path, topic) for path in paths)
        sizes = tuple(map(size, value))
        if out.sizes is None:
            out.sizes = sizes
            out.names = names(message, paths, sizes)
        elif sizes != out.sizes:
            raise LogFormatError(
                f"{role} message {i} on {topic} has {sum(sizes)} values, "
                f"the first had {sum(out.sizes)}"
            )
        out.values[i] = value
    return out


def _channels(codecs: list[Codec]) -> list[np.ndarray]:
    """The indices of each channel's messages (a topic's messages by codec)."""
    distinct = list(dict.fromkeys(codecs))
    if len(distinct) == 1:
        return [np.arange(len(codecs))]
    which = np.asarray([distinct.index(c) for c in codecs])
    return [np.flatnonzero(which == k) for k in range(len(distinct))]


def _plan(
    codec: Codec, payload: bytes, paths: tuple[str, ...], topic: str, header_clock: bool
) -> Layout | None:
    """The layout of a channel's first message, if its mapped fields (and its stamp, on the
    header clock) read from the layout equal the reference decoder's; else None."""
    if codec.message is None:
        return None
    try:
        plan = layout(payload, codec.message, cdr=codec.cdr)
        message = codec.decode(payload)
        wanted = [*paths, *STAMP_PATHS] if header_clock and _has_stamp(message) else paths
        if any(p not in plan.leaves for p in wanted):
            return None
        row = plan.template[None, :]
        for path in paths:
            leaf, value = plan.leaves[path], field_value(message, path, topic)
            if leaf.scalar == hasattr(value, "__len__"):  # a number, or a sequence
                return None
            decoded = np.asarray(value, dtype=np.float64).reshape(-1)
            if not np.array_equal(decoded, leaf.values(row)[0], equal_nan=True):
                return None
        if len(wanted) > len(paths):
            sec, nanosec = (int(plan.leaves[p].integers(row)[0]) for p in STAMP_PATHS)
            if sec * 1_000_000_000 + nanosec != stamp(message, 0):
                return None
    except Exception:  # noqa: BLE001 - rosbags and mcap raise their own types
        return None  # decoded message by message, in order, which says what is wrong
    return plan


def _has_stamp(message: Any) -> bool:
    return getattr(getattr(message, "header", None), "stamp", None) is not None


def field_value(message: Any, path: str, topic: str) -> Any:
    """The value at a dotted path of a decoded message; a missing field says which."""
    value = message
    for part in path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise LogFormatError(
                f"{topic}: its messages have no field {path!r} (no {part!r}); check the "
                "fleet's mapping file"
            ) from None
    return value


def size(value: Any) -> int:
    """How many numbers a field holds: a sequence's length, or one for a scalar."""
    try:
        return len(value)
    except TypeError:
        return 1


def names(message: Any, paths: tuple[str, ...], sizes: tuple[int, ...]) -> tuple[str, ...]:
    """A name per value: ``joint.field`` where the message names its joints (a JointState's
    ``name`` beside ``position``), else the field's path (``data.0``, ``data.1``, ...)."""
    result: list[str] = []
    for path, count in zip(paths, sizes, strict=True):
        parent, _, leaf = path.rpartition(".")
        owner = message
        for part in parent.split(".") if parent else ():
            owner = getattr(owner, part)
        joints = getattr(owner, "name", None)
        if isinstance(joints, list | tuple) and len(joints) == count and count > 0:
            result += [f"{joint}.{leaf}" for joint in joints]
        else:
            result += [path] if count == 1 else [f"{path}.{i}" for i in range(count)]
    return tuple(result)


def stamp(message: Any, fallback_ns: int) -> int:
    """header.stamp in ns (ROS 2 sec/nanosec; rosbags gives ROS 1 stamps the same names)."""
    value = getattr(getattr(message, "header", None), "stamp", None)
    if value is None:
        return fallback_ns
    return int(value.sec) * 1_000_000_000 + int(value.nanosec)
