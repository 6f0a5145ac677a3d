"""The rollout controller's liveness probe: GET /health on a port of its own."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if ok else b'{"detail": "not found"}')

    def log_message(self, *args) -> None:
        pass


def serve_health(port: int) -> None:
    """Answer GET /health on ``port`` from a daemon thread: the controller's liveness probe."""
    server = ThreadingHTTPServer(("0.0.0.0", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
