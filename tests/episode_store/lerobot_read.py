"""Read a LeRobot v3.0 dataset with the ``lerobot`` package and print what it saw, as JSON.

Run by ``test_export.py`` in lerobot's own environment (``make lerobot-tools``: Python 3.12,
which Flywheel's environment is not), so that an export is read by LeRobot's own reader.
"""

import json
import sys

from lerobot.datasets.lerobot_dataset import LeRobotDataset

dataset = LeRobotDataset("flywheel/export", root=sys.argv[1], video_backend="pyav")
first, last = dataset[0], dataset[len(dataset) - 1]
cameras = [k for k, v in dataset.meta.features.items() if v["dtype"] == "video"]
print(
    json.dumps(
        {
            "frames": len(dataset),
            "episodes": dataset.num_episodes,
            "fps": dataset.fps,
            "robot_type": dataset.meta.robot_type,
            "tasks": [first["task"], last["task"]],
            "names": dataset.meta.features["observation.state"]["names"],
            "stats": sorted(dataset.meta.stats),
            "state": [first["observation.state"].tolist(), last["observation.state"].tolist()],
            "shades": {k: [float(first[k].mean()), float(last[k].mean())] for k in cameras},
        }
    )
)
