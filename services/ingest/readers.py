"""Which reader reads a log: one module per format under ``formats/``, picked here.

A unit's format (``sources.py`` names it from the file's suffix or the folder's marker file)
picks the reader; an MCAP file holds either Flywheel's JSON contract or ROS 2 messages, and the
encoding of its first message picks between them, so the file is still streamed only once.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from mcap.records import Metadata

from services.episodes.cameras import VideoFormat
from services.episodes.model import LogFormatError, RawEpisode
from services.ingest.formats import contract, ros
from services.ingest.formats.json_mcap import episode_from_json_mcap
from services.ingest.formats.lerobot import read_lerobot
from services.ingest.formats.mcap_records import PROTOBUF, opened, records
from services.ingest.formats.robomimic import read_robomimic
from services.ingest.mapping import FleetMapping

# Messages of other encodings (protobuf camera channels) that may come before the first JSON or
# CDR message, which says whose the file is, are held until it comes: at most this many, or
# this many bytes, and the file is neither.
LEADING_MESSAGES = 10_000
LEADING_BYTES = 64 * 2**20


def read_mcap(
    source: str | os.PathLike | BinaryIO | bytes,
    mapping: FleetMapping | None = None,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> list[RawEpisode]:
    """The episodes of any MCAP upload: Flywheel's JSON contract (one episode), or ROS 2
    messages mapped by the fleet's ``mapping`` (see ``ros.py``; its outcomes split episodes).

    The message encoding of the first JSON or CDR message decides (camera channels in
    protobuf may come before it); the file is streamed once. Camera tracks are written to
    ``directory`` (ingest passes the episode store's spool; None: the system's temporary
    directory), encoded in ``video_format`` (the defaults when None).
    """
    mapping = mapping or FleetMapping()
    with opened(source) as stream:
        # Metadata records may come anywhere (writers put them at the end): the readers
        # look at them once every message has streamed past.
        metadata: list[Metadata] = []
        topics: set[str] = set()  # every channel's, for a camera that logged no frame
        messages = records(stream, metadata, topics)
        leading, held = [], 0
        for record in messages:
            leading.append(record)
            held += len(record[2].data)
            encoding = record[1].message_encoding
            if encoding in (contract.MESSAGE_ENCODING, ros.MESSAGE_ENCODING):
                break
            if encoding != PROTOBUF:
                raise LogFormatError(
                    f"message encoding {encoding!r} on {record[1].topic}: Flywheel reads its "
                    "JSON contract and ROS 2 (cdr), with cameras in protobuf"
                )
            if len(leading) > LEADING_MESSAGES or held > LEADING_BYTES:
                break
        if not leading:
            raise LogFormatError("no messages: the MCAP file is empty of data")
        encoding = leading[-1][1].message_encoding
        messages = itertools.chain(_handed_on(leading), messages)
        if encoding == contract.MESSAGE_ENCODING:
            return [
                episode_from_json_mcap(messages, mapping, metadata, directory, topics, video_format)
            ]
        if encoding == ros.MESSAGE_ENCODING:
            return ros.episodes_from_ros2_mcap(messages, mapping, metadata, directory, video_format)
        raise LogFormatError(
            f"no JSON or CDR message among the first {len(leading)} (all protobuf): Flywheel "
            "reads its JSON contract and ROS 2 (cdr), with cameras in protobuf"
        )


def _handed_on(held: list) -> Iterator:
    """The held records in order, each let go of as it is handed on."""
    queue = collections.deque(held)
    held.clear()
    while queue:
        yield queue.popleft()


def read_bag(
    path: Path,
    mapping: FleetMapping,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> list[RawEpisode]:
    """The episodes of a ROS 1 ``.bag`` file or a ROS 2 bag folder (formats ``rosbag1`` and
    ``rosbag2``), on a local disk; camera tracks as ``read_mcap``'s."""
    return ros.read_rosbag(path, mapping, directory, video_format)


def read_container(
    fmt: str,
    path: Path,
    mapping: FleetMapping,
    recorded_at: datetime,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> Iterator[tuple[str, RawEpisode | LogFormatError]]:
    """(name, episode or why it cannot be one) per episode of a container of many (format
    ``robomimic`` or ``lerobot``) on a local disk; raises for a container it cannot read.

    Episodes' camera tracks are written under ``directory`` (default: the system's temporary
    folder) in ``video_format`` (default: ``VideoFormat()``); an episode that is an error
    leaves none."""
    if fmt == "robomimic":
        return read_robomimic(
            path, mapping.robomimic, mapping.defaults, recorded_at, directory, video_format
        )
    return read_lerobot(path, mapping.defaults, recorded_at, directory, video_format)
