"""openpi's own client (``openpi-client``, in a virtual environment of its own: it needs
numpy < 2) connects to the policy server unchanged, with the robot's key as its api_key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.policy_server import codec

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / ".venv-tools" / "openpi-client" / "bin" / "python"
ROBOT = Path(__file__).with_name("openpi_robot.py")


@pytest.fixture(scope="module")
def openpi_python() -> Path:
    check = [str(CLIENT), "-c", "import openpi_client.websocket_client_policy"]
    if not CLIENT.exists() or subprocess.run(check, capture_output=True).returncode:
        pytest.skip(
            "openpi-client is not installed: `make tools` builds .venv-tools/openpi-client "
            "(it needs the package index)"
        )
    return CLIENT


def test_openpi_client_runs_a_robot_against_the_server_unchanged(served, openpi_python):
    run = subprocess.run(
        [str(openpi_python), str(ROBOT), f"{served.ws}/robots/r2", served.keys["r2"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["numpy"].startswith("1.")  # openpi's own numpy, not ours
    assert seen["metadata"]["robot_id"] == "r2" and seen["metadata"]["policy_version"] == "1"
    assert seen["dtype"] == "float32" and np.array(seen["actions"]).shape == (1, 2)
    assert "vector of 4 numbers" in seen["error"]
    assert np.array(seen["after_error"]).shape == (1, 2)  # the connection outlived the error


def test_the_wire_format_is_openpi_clients_byte_for_byte(openpi_python):
    """What openpi's packer writes, this codec reads back exactly, and the reverse."""
    script = (
        "import sys, numpy as np; from openpi_client import msgpack_numpy as m; "
        "sys.stdout.buffer.write(m.packb({'a': np.arange(6, dtype=np.float32).reshape(2, 3), "
        "'s': np.int64(7), 't': 'x'}))"
    )
    theirs = subprocess.run(
        [str(openpi_python), "-c", script], capture_output=True, timeout=60, check=True
    ).stdout
    mine = codec.packb(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(7), "t": "x"}
    )
    assert mine == theirs
    decoded = codec.unpackb(theirs)
    np.testing.assert_array_equal(decoded["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert decoded["s"] == 7 and decoded["t"] == "x"
