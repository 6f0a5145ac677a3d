"""A webhook receiver on 127.0.0.1: a real HTTP server in a thread that keeps what it got."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Answers 500 to the first ``fail_first`` posts, then 200; ``hold`` keeps every answer
    back until it is set. ``bodies`` are the posts it answered 200, in order."""

    def __init__(self, *, fail_first: int = 0, port: int = 0, hold: bool = False) -> None:
        self.fail_first = fail_first
        self.posts = 0
        self.bodies: list[dict] = []
        self.keys: list[str] = []
        self.got = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.release.wait(30)
                receiver.posts += 1
                if receiver.posts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"not now")
                    return
                receiver.bodies.append(body)
                receiver.keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.got.set()

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port
