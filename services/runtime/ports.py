"""The ports Flywheel's own services listen on, checked before any of them starts.

A port that another program already listens on (Redis on 6379, say) would otherwise show
as a service that never becomes ready, minutes later, with that service's stack trace.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass


class PortInUse(RuntimeError):
    """A port Flywheel wants is taken; the message names it, its service and its setting."""


@dataclass(frozen=True)
class Port:
    number: int
    # What listens on it, for the message: "Ray GCS".
    service: str
    # The environment variable that moves it: "FLYWHEEL_RAY_PORT".
    setting: str


def check_free(ports: Iterable[Port]) -> None:
    """Raise PortInUse for the first port that is wanted twice or taken on this machine."""
    wanted: dict[int, Port] = {}
    for port in ports:
        if (other := wanted.setdefault(port.number, port)) is not port:
            raise PortInUse(
                f"port {port.number} is wanted by both {other.service} and {port.service}: "
                f"set {port.setting} to another port"
            )
        try:
            _bind(port.number)
        except OSError as exc:
            taken = (
                "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            )
            raise PortInUse(
                f"port {port.number} ({port.service}) {taken}: set {port.setting} to a free port"
            ) from None


def _bind(number: int) -> None:
    """Bind the port on every interface (Ray's GCS listens on all of them), as a server
    would: it fails when anything on this machine listens on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # A connection closed moments ago (TIME_WAIT) does not keep a server off the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("0.0.0.0", number))
