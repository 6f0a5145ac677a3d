"""The Flywheel API on a real socket in a background thread, for as long as a block runs.

The simulated fleet's shift uses it: its robots reach Flywheel over HTTP, as real robots do,
not through an in-process test client.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from services.api.main import create_app


@contextmanager
def api_in_background(host: str = "127.0.0.1", *, startup_timeout_s: float = 60) -> Iterator[str]:
    """Serve the API on a free port of ``host``; yields its base URL, stops it afterwards."""
    # Bound here and handed to uvicorn: the port is ours before the server starts (no race
    # with another process picking the same free port).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    # No access log (uvicorn writes it to stdout: it would corrupt --json) and no logging
    # configuration of its own: the host process keeps its handlers.
    config = uvicorn.Config(create_app(), log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="flywheel-api"
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError(f"the Flywheel API did not start on {host}:{port}")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
