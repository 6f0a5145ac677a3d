"""ROS messages of one fixed byte layout, decoded in batches with numpy.

A robot logs its joint states and commands at a fixed shape: a JointState with the same joint
names, a Float64MultiArray of the same length, message after message. Decoding each message in
Python (``mcap-ros2-support``, ``rosbags``) costs microseconds per field; here one message of a
topic, the template, is walked field by field to find where every number lies, and every other
message of that topic whose bytes match the template everywhere except in those numbers (the
same length, encapsulation, string bytes, sequence lengths, padding) has its numbers at the same
offsets: a topic's numbers become one ``np.frombuffer`` over its payloads, side by side.

Two serialisations: CDR (ROS 2; a 4-byte encapsulation header whose second byte's low bit says
little-endian, each primitive aligned to its size from the end of that header, a sequence's
elements aligned only when it has any) and ROS 1 (little-endian, packed). The walk reads the
message definition as the reference decoder does (``ros2msg_type``: mcap-ros2-support's own
parser and its ``builtin_interfaces/Time``; ``rosbags_type``: the bag reader's typestore).

Only numbers outside arrays of messages vary between the messages of one layout. Booleans,
bytes and chars, strings and everything inside an array of messages must equal the template's
bytes, so a message that differs there (another joint list, a longer array) is not of the
layout and the caller decodes it with the reference decoder. Every byte the reference decoder
validates (string terminators and UTF-8, sequence lengths, the encapsulation) is therefore
the template's, which the reference decoder read without complaint.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# A sequence: its length (uint32) comes before its elements.
SEQUENCE = -1
# Numbers that may differ between messages of one layout, and their numpy types.
NUMBERS = {
    "int8": "i1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "int64": "i8",
    "uint64": "u8",
    "float32": "f4",
    "float64": "f8",
}
# Primitives whose bytes must equal the template's (decoded as bools, bytes or text).
OTHER_SIZES = {"bool": 1, "byte": 1, "char": 1, "uint8": 1}


class UnsupportedLayout(ValueError):
    """The message cannot be walked here (a wide string, a payload cut short); the caller
    decodes its topic message by message."""


@dataclass(frozen=True)
class Field:
    name: str
    # A primitive's type name ("float64", "string") or a nested message's fields.
    type: str | tuple[Field, ...]
    # None: one value; n >= 0: a fixed-size array of n; SEQUENCE: length-prefixed.
    count: int | None = None


@dataclass(frozen=True)
class Leaf:
    """Where one numeric field lies in every message of a layout."""

    # Offset of its first value from the start of the payload.
    offset: int
    # Its values' numpy type, with the message's byte order.
    dtype: np.dtype
    # How many values it holds.
    count: int
    # True for a single number (the reference decoder gives a number, not a sequence).
    scalar: bool

    def values(self, rows: np.ndarray) -> np.ndarray:
        """(messages, count) float64 from the (messages, payload length) uint8 rows."""
        end = self.offset + self.count * self.dtype.itemsize
        block = np.ascontiguousarray(rows[:, self.offset : end])
        return block.view(self.dtype).astype(np.float64).reshape(len(rows), self.count)

    def integers(self, rows: np.ndarray) -> np.ndarray:
        """A scalar integer field of every message, as int64."""
        end = self.offset + self.dtype.itemsize
        return (
            np.ascontiguousarray(rows[:, self.offset : end]).view(self.dtype)[:, 0].astype(np.int64)
        )


@dataclass(frozen=True)
class Layout:
    """One message's layout: which bytes every message of it shares, where its numbers lie."""

    # The template message's bytes.
    template: np.ndarray
    # Indices of the bytes that every message of this layout has equal to the template's.
    fixed: np.ndarray
    # The numeric fields outside arrays of messages, by dotted path ("header.stamp.sec").
    leaves: dict[str, Leaf]

    def matching(self, payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Which payloads are of this layout (a bool per payload), and their bytes as
        (matching messages, payload length) uint8 rows."""
        size = len(self.template)
        same = np.fromiter((len(p) == size for p in payloads), dtype=bool, count=len(payloads))
        candidates = np.flatnonzero(same)
        if not len(candidates):
            return same, np.empty((0, size), dtype=np.uint8)
        joined = b"".join(payloads[i] for i in candidates.tolist())
        rows = np.frombuffer(joined, dtype=np.uint8).reshape(len(candidates), size)
        equal = (rows[:, self.fixed] == self.template[self.fixed]).all(axis=1)
        same[candidates[~equal]] = False
        return same, rows[equal]


def ros2msg_type(name: str, text: str) -> tuple[Field, ...]:
    """A ROS 2 message definition (an MCAP ``ros2msg`` schema) as mcap-ros2-support reads it."""
    from mcap_ros2._dynamic import TimeDefinition, _for_each_msgdef  # its own parser

    msgdefs: dict[str, Any] = {
        "builtin_interfaces/Time": TimeDefinition,
        "builtin_interfaces/Duration": TimeDefinition,
    }

    def keep(full: str, short: str, msgdef: Any) -> None:
        msgdefs[full] = msgdefs[short] = msgdef

    _for_each_msgdef(name, text, keep)

    def fields(msgdef: Any) -> tuple[Field, ...]:
        if not msgdef.fields:  # ROS 2 gives an empty message one uint8 member
            return (Field("structure_needs_at_least_one_member", "uint8"),)
        result = []
        for field in msgdef.fields:
            kind = field.type
            if kind.is_primitive_type():
                element: str | tuple[Field, ...] = kind.type
            else:
                nested = msgdefs.get(f"{kind.pkg_name}/{kind.type}")
                if nested is None:
                    raise UnsupportedLayout(f"no definition of {kind.pkg_name}/{kind.type}")
                element = fields(nested)
            count = None
            if kind.is_array:
                fixed = kind.is_fixed_size_array() and kind.array_size is not None
                count = kind.array_size if fixed else SEQUENCE
            result.append(Field(field.name, element, count))
        return tuple(result)

    return fields(msgdefs[name])


def rosbags_type(typestore: Any, name: str) -> tuple[Field, ...]:
    """A message type as the rosbags typestore that deserialises it defines it."""
    from rosbags.interfaces import Nodetype

    def element(desc: tuple) -> str | tuple[Field, ...]:
        if desc[0] == Nodetype.BASE:
            return desc[1][0]
        if desc[0] == Nodetype.NAME:
            return fields(desc[1])
        raise UnsupportedLayout(f"nested arrays in {name}")

    def fields(typename: str) -> tuple[Field, ...]:
        result = []
        for fname, desc in typestore.fielddefs[typename][1]:  # no decoder generated
            if desc[0] == Nodetype.ARRAY:
                result.append(Field(fname, element(desc[1][0]), desc[1][1]))
            elif desc[0] == Nodetype.SEQUENCE:
                result.append(Field(fname, element(desc[1][0]), SEQUENCE))
            else:
                result.append(Field(fname, element(desc)))
        return tuple(result)

    return fields(name)


def layout(payload: bytes, message: tuple[Field, ...], *, cdr: bool) -> Layout:
    """The layout of ``payload``, a message of type ``message`` serialised in CDR (ROS 2) or
    ROS 1; raises UnsupportedLayout where it cannot be walked."""
    return _Walk(payload, cdr).run(message)


class _Walk:
    """One pass over a template message, as the reference decoders read it."""

    def __init__(self, payload: bytes, cdr: bool) -> None:
        self.payload = payload
        self.cdr = cdr
        if cdr and len(payload) < 4:
            raise UnsupportedLayout("a CDR payload shorter than its encapsulation header")
        self.little = not cdr or bool(payload[1] & 1)
        self.start = self.pos = 4 if cdr else 0
        self.free = np.zeros(len(payload), dtype=bool)
        self.leaves: dict[str, Leaf] = {}

    def run(self, message: tuple[Field, ...]) -> Layout:
        self.message(message, "", in_array=False)
        if self.pos > len(self.payload):
            raise UnsupportedLayout("the payload ends inside the message")
        template = np.frombuffer(self.payload, dtype=np.uint8)
        return Layout(template, np.flatnonzero(~self.free), self.leaves)

    def align(self, size: int) -> None:
        if self.cdr and size > 1:
            self.pos += -(self.pos - self.start) % size

    def length(self) -> int:
        self.align(4)
        try:
            (value,) = struct.unpack_from("<I" if self.little else ">I", self.payload, self.pos)
        except struct.error as exc:
            raise UnsupportedLayout(f"the payload ends at a length ({exc})") from None
        self.pos += 4
        return value

    def message(self, fields: tuple[Field, ...], prefix: str, *, in_array: bool) -> None:
        for field in fields:
            path = f"{prefix}{field.name}"
            count = self.length() if field.count == SEQUENCE else field.count
            if isinstance(field.type, tuple):
                for _ in range(1 if count is None else count):
                    self.message(field.type, f"{path}.", in_array=in_array or count is not None)
            elif field.type == "string":
                for _ in range(1 if count is None else count):
                    length = self.length()  # moves past the length first
                    self.pos += length
            elif field.type in NUMBERS:
                self.numbers(path, NUMBERS[field.type], count, in_array=in_array)
            elif field.type in OTHER_SIZES:
                self.pos += 1 if count is None else count
            else:
                raise UnsupportedLayout(f"field {path} of type {field.type}")
            if self.pos > len(self.payload):
                raise UnsupportedLayout("the payload ends inside the message")

    def numbers(self, path: str, code: str, count: int | None, *, in_array: bool) -> None:
        dtype = np.dtype(("<" if self.little else ">") + code)
        n = 1 if count is None else count
        if n:
            self.align(dtype.itemsize)
        end = self.pos + n * dtype.itemsize
        if not in_array:  # numbers inside an array of messages stay the template's
            self.leaves[path] = Leaf(self.pos, dtype, n, scalar=count is None)
            self.free[self.pos : end] = True
        self.pos = end
