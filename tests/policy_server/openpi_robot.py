"""A robot as openpi's own client runs it: run with the openpi-client virtual environment's
Python (``make tools`` builds it), never Flywheel's. Prints what it saw as one JSON line.

    python openpi_robot.py WS_URL API_KEY
"""

import json
import sys

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

url, key = sys.argv[1], sys.argv[2]
policy = WebsocketClientPolicy(host=url, api_key=key)
state = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
first = policy.infer({"observation.state": state, "task": "toy-reach"})
try:
    policy.infer({"observation.state": state[:2], "task": "toy-reach"})
    error = None
except RuntimeError as exc:  # how openpi-client reports the server's text answer
    error = str(exc)
second = policy.infer({"state": state, "prompt": "toy-push"})
print(
    json.dumps(
        {
            "numpy": np.__version__,
            "metadata": policy.get_server_metadata(),
            "actions": first["actions"].tolist(),
            "dtype": str(first["actions"].dtype),
            "version": first["policy_version"],
            "error": error,
            "after_error": second["actions"].tolist(),
        }
    )
)
