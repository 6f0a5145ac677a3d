"""MCAP files as one stream of records, for the readers of both kinds of MCAP upload.

Flywheel's JSON contract (``json_mcap.py``) and ROS 2 messages (``ros.py``) come in the same
container: ``records`` walks it once in file order, message by message, so memory never holds
the file, and turns any damage into a ``LogFormatError``. It reads the records itself, with
mcap's record types and checks (closing magic, record size limit, chunk CRCs): mcap's
``StreamReader`` reads every field of every record through a stream object, several calls per
message and per index entry, which cost more than decoding a ROS 2 message in batches.
Metadata records (which writers put anywhere, usually at the end) are collected as they pass;
``episode_metadata`` reads the episode facts in them as the fleet's mapping file names them.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, BinaryIO

import orjson
from mcap.data_stream import ReadDataStream
from mcap.exceptions import (
    EndOfFile,
    InvalidMagic,
    McapError,
    RecordLengthLimitExceeded,
    UnsupportedCompressionError,
)
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Footer, Message, Metadata, Schema
from mcap.stream_reader import CRCValidationError

from services.episodes.model import LogFormatError
from services.features import OUTCOMES
from services.ingest.mapping import FleetMapping

# A corrupt record length must not make the reader allocate gigabytes; the writer's chunks
# are about 1 MiB, and no record of an episode log comes near this.
RECORD_SIZE_LIMIT = 256 * 2**20
MCAP_MAGIC = b"\x89MCAP0\r\n"
# The message encoding of Foxglove's protobuf messages (cameras, in any kind of MCAP upload).
PROTOBUF = "protobuf"
JSON = "json"
# A record's opcode and length; a message record's channel, sequence, log and publish times.
RECORD_HEAD = struct.Struct("<BQ")
MESSAGE_HEAD = struct.Struct("<HIQQ")
# The records read besides messages and chunks (indexes, statistics, attachments are skipped).
PARSED = {Opcode.SCHEMA: Schema, Opcode.CHANNEL: Channel, Opcode.METADATA: Metadata}


@contextmanager
def opened(source: str | os.PathLike | BinaryIO | bytes) -> Iterator[BinaryIO]:
    """A path, a binary stream (read once, never seeked) or bytes, as a binary stream."""
    if isinstance(source, bytes | bytearray):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            yield stream
    else:
        yield source


def records(
    stream: BinaryIO, metadata: list[Metadata], topics: set[str] | None = None
) -> Iterator[tuple]:
    """``(schema, channel, message)`` in file order, appending each metadata record to
    ``metadata`` as it passes (and each channel's topic to ``topics``, messages or not);
    damage raises LogFormatError.

    One pass over the stream for both: mcap's ``NonSeekingReader`` answers one query per
    stream (``iter_messages`` or ``iter_metadata``), so this walks its records the same way.
    """
    magic = stream.read(len(MCAP_MAGIC))
    if not magic:
        raise LogFormatError("empty file")
    if magic != MCAP_MAGIC:
        raise LogFormatError("not an MCAP file (bad magic bytes)")
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    try:
        # File order, not log-time order: sorting would hold every message in memory.
        for record in _records(stream):
            if isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    raise McapError(f"no channel record found with id {record.channel_id}")
                yield schemas.get(channel.schema_id), channel, record
            elif isinstance(record, Channel):
                if record.schema_id != 0 and record.schema_id not in schemas:
                    raise McapError(f"no schema record found with id {record.schema_id}")
                channels[record.id] = record
                if topics is not None:
                    topics.add(record.topic)
            elif isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Metadata):
                metadata.append(record)
    except LogFormatError:
        raise
    except InvalidMagic as exc:  # the opening magic was fine: this is the closing one
        raise LogFormatError("corrupt MCAP: bad magic bytes at the end of the file") from exc
    except EndOfFile as exc:
        size = _position(stream)
        where = f"after {size} bytes" if size is not None else "early"
        raise LogFormatError(f"truncated MCAP: the file ends {where}") from exc
    except (McapError, struct.error, zlib.error, ValueError, KeyError) as exc:
        raise LogFormatError(f"truncated or corrupt MCAP ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # zstd/lz4 raise their own types on a damaged chunk
        raise LogFormatError(f"corrupt MCAP ({type(exc).__name__}: {exc})") from exc


def episode_metadata(metadata: list[Metadata], mapping: FleetMapping) -> list[dict[str, str]]:
    """The episode facts of the log's metadata records named as the mapping says, in file
    order, with outcomes translated to Flywheel's; [] when the mapping reads none."""
    config = mapping.metadata
    if config is None:
        return []
    result = []
    for record in metadata:
        if record.name != config.name:
            continue
        facts = config.fields(record.metadata)
        if "outcome" in facts and config.values:
            facts["outcome"] = config.values.get(facts["outcome"], facts["outcome"])
        if facts.get("outcome", OUTCOMES[0]) not in OUTCOMES:
            raise LogFormatError(
                f"outcome {facts['outcome']!r} in metadata record {record.name!r} is none of "
                f"{OUTCOMES}; map it under metadata.values in the fleet's mapping file"
            )
        result.append(facts)
    return result


def file_metadata(metadata: list[Metadata], mapping: FleetMapping) -> dict[str, str]:
    """Every record's facts merged, a later record's over an earlier's (one episode a file)."""
    merged: dict[str, str] = {}
    for facts in episode_metadata(metadata, mapping):
        merged.update(facts)
    return merged


def _position(stream: BinaryIO) -> int | None:
    """How far into the stream the reader got, where the stream can say."""
    try:
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def decoder(channel, schema) -> Callable[[bytes], Any]:
    """The decoder for a channel's messages (CDR, protobuf or JSON), or why there is none."""
    if channel.message_encoding == JSON:
        return orjson.loads
    try:
        decode = _generated_decoder(
            channel.message_encoding,
            *((schema.name, schema.encoding, schema.data) if schema else (None, None, None)),
        )
    except Exception as exc:  # a schema the decoder cannot parse
        raise LogFormatError(f"{channel.topic}: cannot decode its schema ({exc})") from exc
    if decode is None:
        raise LogFormatError(
            f"{channel.topic}: message encoding {channel.message_encoding!r} with schema "
            f"encoding {schema.encoding if schema else None!r}: Flywheel decodes ROS 2 CDR "
            "(cdr messages, ros2msg schemas), protobuf and JSON"
        )
    return decode


@lru_cache(maxsize=256)
def _generated_decoder(
    message_encoding: str, name: str | None, encoding: str | None, data: bytes | None
) -> Callable[[bytes], Any] | None:
    """mcap-ros2-support's (or mcap-protobuf-support's) decoder for one schema. A fleet logs
    the same few message types in every file: each schema's decoder is generated once per
    process, not once per file."""
    if message_encoding == PROTOBUF:
        from mcap_protobuf.decoder import DecoderFactory
    else:
        from mcap_ros2.decoder import DecoderFactory

    schema = None if name is None else Schema(id=0, name=name, encoding=encoding, data=data)
    return DecoderFactory().decoder_for(message_encoding, schema)


def _records(stream: BinaryIO) -> Iterator[Any]:
    """The records after the opening magic, the records inside chunks in their place."""
    while True:
        opcode, length = RECORD_HEAD.unpack(_read(stream, RECORD_HEAD.size))
        if length > RECORD_SIZE_LIMIT:
            raise RecordLengthLimitExceeded(opcode, length, RECORD_SIZE_LIMIT)
        body = _read(stream, length)
        if opcode == Opcode.MESSAGE:
            yield _message(body, 0, length)
        elif opcode == Opcode.CHUNK:
            yield from _chunk_records(Chunk.read(ReadDataStream(io.BytesIO(body))))
        elif opcode in PARSED:
            yield PARSED[opcode].read(ReadDataStream(io.BytesIO(body)))
        elif opcode == Opcode.FOOTER:
            Footer.read(ReadDataStream(io.BytesIO(body)))
            magic = _read(stream, len(MCAP_MAGIC))
            if magic != MCAP_MAGIC:
                raise InvalidMagic(magic)
            return


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise EndOfFile()
    return data


def _message(data: bytes, start: int, length: int) -> Message:
    channel_id, sequence, log_time, publish_time = MESSAGE_HEAD.unpack_from(data, start)
    payload = data[start + MESSAGE_HEAD.size : start + length]
    return Message(channel_id, log_time, payload, publish_time, sequence)


def _chunk_records(chunk: Chunk) -> Iterator[Any]:
    """A chunk's schemas, channels and messages (its CRC checked, as mcap's reader does)."""
    if chunk.compression == "zstd":
        import zstandard

        data = zstandard.decompress(chunk.data, chunk.uncompressed_size)
    elif chunk.compression == "lz4":
        import lz4.frame

        data = lz4.frame.decompress(chunk.data)
    elif chunk.compression == "":
        data = chunk.data
    else:
        raise UnsupportedCompressionError(chunk.compression)
    if chunk.uncompressed_crc != 0 and zlib.crc32(data) != chunk.uncompressed_crc:
        raise CRCValidationError(chunk.uncompressed_crc, zlib.crc32(data), chunk)
    position, end = 0, len(data)
    while position < end:
        opcode, length = RECORD_HEAD.unpack_from(data, position)
        position += RECORD_HEAD.size
        if position + length > end:
            raise McapError(f"a record of {length} bytes runs past the end of its chunk")
        if opcode == Opcode.MESSAGE:
            yield _message(data, position, length)
        elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL):
            body = data[position : position + length]
            yield PARSED[opcode].read(ReadDataStream(io.BytesIO(body)))
        position += length
