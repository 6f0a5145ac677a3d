"""Where logs come from: a local folder or an object-store URI, through pyarrow filesystems.

A source holds log *units*: a file (``.mcap``, ROS 1 ``.bag``, robomimic ``.hdf5``/``.h5``), a
ROS 2 bag folder (``metadata.yaml`` beside its storage files) or a LeRobot dataset folder
(``meta/info.json``). Names starting with ``.`` are uploads in flight and are left alone, and
files of other types are not logs. Ingest only ever reads units: a reader that needs a local path
(rosbags, h5py, a LeRobot dataset) gets the unit itself on a local disk, or a temporary copy
downloaded from the object store. Only retention removes them (``remove``), when they are
older than ``FLYWHEEL_RETENTION_RAW_DAYS``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pyarrow import fs as pafs

HASH_BLOCK = 1 << 20
# File suffix -> format of a unit that is one file.
FILE_FORMATS = {".mcap": "mcap", ".bag": "rosbag1", ".hdf5": "robomimic", ".h5": "robomimic"}
# Marker file -> format of a unit that is a folder.
FOLDER_MARKERS = {"metadata.yaml": "rosbag2", "meta/info.json": "lerobot"}
# Formats read from a stream, in one pass; the others need the unit on a local disk.
STREAMED = ("mcap",)
# Formats whose units hold many episodes, each identified by its own content.
CONTAINERS = ("robomimic", "lerobot")


@dataclass(frozen=True)
class LogUnit:
    format: str
    path: str  # in the source's filesystem: the file, or the folder
    uri: str
    # The files that make the unit up, in a stable order: what its content hash covers.
    files: tuple[str, ...]
    size: int
    modified: datetime


class Source:
    """A folder or URI of logs, and how to list, hash and read its units."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.filesystem, self.base = pafs.FileSystem.from_uri(uri)
            scheme = uri.split("://", 1)[0]
            self.prefix = "" if scheme == "file" else f"{scheme}://"
        else:
            self.filesystem, self.base, self.prefix = pafs.LocalFileSystem(), str(uri), ""
        self.local = isinstance(self.filesystem, pafs.LocalFileSystem)

    def discover(self) -> list[LogUnit]:
        """Every finished unit under the base, in a stable order."""
        if self.filesystem.get_file_info(self.base).type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(self.base, recursive=True)
        files = {
            f.path: f
            for f in self.filesystem.get_file_info(selector)
            if f.type == pafs.FileType.File and not _hidden(f.path, self.base)
        }
        folders: dict[str, str] = {}
        for path in files:
            for marker, fmt in FOLDER_MARKERS.items():
                if path.endswith("/" + marker):
                    folders.setdefault(path[: -len(marker) - 1], fmt)
        # A dataset inside a dataset (an export kept beside its source) is its own unit.
        units, claimed = [], set()
        for folder in sorted(folders, key=len, reverse=True):
            members = tuple(
                sorted(p for p in files if p.startswith(folder + "/") and p not in claimed)
            )
            claimed.update(members)
            units.append(self._unit(folders[folder], folder, members, files))
        for path in sorted(set(files) - claimed):
            fmt = FILE_FORMATS.get(PurePosixPath(path).suffix.lower())
            if fmt is not None:
                units.append(self._unit(fmt, path, (path,), files))
        return sorted(units, key=lambda u: u.path)

    def _unit(self, fmt: str, path: str, members: tuple[str, ...], files: dict) -> LogUnit:
        infos = [files[m] for m in members]
        newest = max((i.mtime for i in infos if i.mtime is not None), default=None)
        return LogUnit(
            format=fmt,
            path=path,
            uri=self.prefix + path,
            files=members,
            size=sum(i.size or 0 for i in infos),
            modified=_utc(newest),
        )

    def open(self, path: str):
        return self.filesystem.open_input_stream(path, compression=None)

    def sha256(self, unit: LogUnit) -> str:
        """The hash of the unit's files: their paths inside the unit and their bytes."""
        digest = hashlib.sha256()
        for path in unit.files:
            if len(unit.files) > 1:
                digest.update(path[len(unit.path) :].encode() + b"\0")
            with self.open(path) as stream:
                while block := stream.read(HASH_BLOCK):
                    digest.update(block)
        return digest.hexdigest()

    def remove(self, unit: LogUnit) -> None:
        """Delete a unit's files (and its folder, for a folder unit): retention only."""
        for path in unit.files:
            self.filesystem.delete_file(path)
        if unit.files != (unit.path,):
            self.filesystem.delete_dir(unit.path)

    @contextmanager
    def local_path(self, unit: LogUnit) -> Iterator[Path]:
        """The unit on a local disk: itself, or a temporary copy removed afterwards."""
        if self.local:
            yield Path(unit.path)
            return
        scratch = Path(tempfile.mkdtemp(prefix="flywheel-unit-"))
        try:
            name = PurePosixPath(unit.path).name
            for path in unit.files:
                target = scratch / name / path[len(unit.path) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.open(path) as stream, open(target, "wb") as out:
                    shutil.copyfileobj(stream, out, HASH_BLOCK)
            yield scratch / name
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _utc(moment: datetime | None) -> datetime:
    """A filesystem's modification time as aware UTC (pyarrow gives local files naive UTC)."""
    if moment is None:
        return datetime.fromtimestamp(0, UTC)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hidden(path: str, base: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(path[len(base) :]).parts)
