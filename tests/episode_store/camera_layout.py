"""A camera added to an episode store in LeRobot v3.0's layout, as the export expects it.

One H.264 video per data file (every frame a keyframe), at the data file's numbers
(``videos/{camera}/chunk-CCC/file-NNN.mp4``), holding its episodes end to end at the store's
fps; each episode's row of meta/episodes says where (``videos/{camera}/chunk_index``,
``file_index``, ``from_timestamp``, ``to_timestamp``) and has its per-channel stats
(``stats/{camera}/...``, shape (3, 1, 1), values 0-1); info.json has the camera feature
(dtype ``video``).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HEIGHT, WIDTH = 32, 48


def add_camera(store: Path, camera: str) -> None:
    info = json.loads((store / "meta/info.json").read_text())
    fps = info["fps"]
    for episodes_file in sorted((store / "meta/episodes").rglob("file-*.parquet")):
        table = pq.read_table(episodes_file)
        chunk, file = table["data/chunk_index"][0].as_py(), table["data/file_index"][0].as_py()
        lengths = table["length"].to_pylist()
        # each episode one flat colour, brighter episode by episode
        shades = [40 + 60 * k for k in range(len(lengths))]
        relative = f"videos/{camera}/chunk-{chunk:03d}/file-{file:03d}.mp4"
        _write_video(
            store / relative,
            [s for s, n in zip(shades, lengths, strict=True) for _ in range(n)],
            fps,
        )
        starts = np.r_[0, np.cumsum(lengths)[:-1]] / fps
        columns = {
            f"videos/{camera}/chunk_index": [chunk] * len(lengths),
            f"videos/{camera}/file_index": [file] * len(lengths),
            f"videos/{camera}/from_timestamp": starts.tolist(),
            f"videos/{camera}/to_timestamp": (starts + np.asarray(lengths) / fps).tolist(),
            f"stats/{camera}/mean": [_channels(s / 255) for s in shades],
            f"stats/{camera}/std": [_channels(0.0) for _ in shades],
            f"stats/{camera}/min": [_channels(s / 255) for s in shades],
            f"stats/{camera}/max": [_channels(s / 255) for s in shades],
            f"stats/{camera}/count": [[n] for n in lengths],
        }
        for name, values in columns.items():
            table = table.append_column(name, pa.array(values))
        pq.write_table(table, episodes_file)
    info["features"][camera] = {
        "dtype": "video",
        "shape": [HEIGHT, WIDTH, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": HEIGHT,
            "video.width": WIDTH,
            "video.codec": "h264",
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (store / "meta/info.json").write_text(json.dumps(info))


def _channels(value: float) -> list:
    return [[[value]]] * 3


def _write_video(path: Path, shades: list[int], fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # Every frame a keyframe: as in the store's files, each episode starts on one.
        stream.codec_context.gop_size = 1
        for shade in shades:
            image = np.full((HEIGHT, WIDTH, 3), shade, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
