"""A local Ray head with the dashboard, hence Ray's job submission API, run by Flywheel.

The embedded default starts one for each training job and stops it when the job ends;
`flywheel up` starts one for the production stack and `flywheel down` stops it. The head is
`ray start --head --block` in a process group of its own. Stopping sends SIGTERM to that
command alone, which shuts Ray down in order (signalling the whole group at once kills the
GCS first and Ray's drain then waits 30 s for it), then SIGKILL to what is left of the group.

The GCS and dashboard listen where asked; Ray's other listening ports are free ephemeral
ones, so two heads on one machine do not collide and none falls in 10002-19999, the range
Ray's worker processes take.

Ray 2.60 heads require a token (``~/.ray/auth_token``); ``ray start`` refuses to run without
one, so ``start_head`` has Ray make it first on a machine that has none. ``configure_runtime``
sets ``RAY_AUTH_MODE=token`` so that Flywheel's drivers and job clients send it. Without the
token a driver is refused, which is what once looked like the node address (192.0.2.2 on the
development machine) being unreachable: it is reachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Ray puts Unix sockets under its temp folder, in session_<date>_<time>_<usec>_<pid>/sockets/
# (up to 64 more characters); a socket's path must stay under 108 bytes.
MAX_RAY_TEMP_LEN = 40
# Ray's listening ports besides the GCS and the dashboard; each gets a free ephemeral port.
INTERNAL_PORTS = (
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


class RayHeadError(RuntimeError):
    """The head did not start; the message ends with its log."""


@dataclass(frozen=True)
class RayHead:
    # Process id of `ray start --block`, the leader of the head's process group.
    pid: int
    # host:port of the GCS, what a driver joins (`ray.init(address=...)`).
    address: str
    # http://host:port of the dashboard, where jobs are submitted.
    job_address: str


def local_cpus() -> int:
    """CPUs a Ray that Flywheel starts on this machine offers: all of them, at least 2."""
    return max(2, os.cpu_count() or 2)


def temp_dir_for(folder: Path) -> Path:
    """``folder``, or a short folder named after it when Ray's socket paths would be too long."""
    if len(str(folder)) <= MAX_RAY_TEMP_LEN:
        return folder
    return Path("/tmp") / f"flywheel-ray-{hashlib.sha1(str(folder).encode()).hexdigest()[:10]}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_head(
    temp_dir: Path,
    log: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    dashboard_port: int | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> RayHead:
    """Start a head and wait until its job API answers; free ports where none are given."""
    port, dashboard_port = port or free_port(host), dashboard_port or free_port(host)
    temp = temp_dir_for(temp_dir)
    temp.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    argv = [
        str(bin_dir / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--include-dashboard=true",
        f"--dashboard-host={host}",
        f"--dashboard-port={dashboard_port}",
        f"--num-cpus={local_cpus()}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        *(f"--{name}={free_port(host)}" for name in INTERNAL_PORTS),
    ]
    # Job entrypoints run `python`: this interpreter, the one with Flywheel installed.
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    head_env = {**os.environ, **(env or {}), "PATH": path, "RAY_AUTH_MODE": "token"}
    ensure_auth_token(head_env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            env=head_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    head = RayHead(process.pid, f"{host}:{port}", f"http://{host}:{dashboard_port}")
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        if _answers(head.job_address):
            return head
        time.sleep(1)
    stop_head(process.pid, timeout_s=10)
    tail = log.read_text(errors="replace")[-2000:]
    raise RayHeadError(f"the Ray head did not start in {timeout_s:.0f} s; its log ends:\n{tail}")


def ensure_auth_token(env: dict[str, str]) -> None:
    """Have Ray make its token (``~/.ray/auth_token``) unless ``env`` already points at one:
    a fresh machine has none, and ``ray start --head`` in token mode refuses to start."""
    if env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"):
        return
    home = Path(env.get("HOME") or Path.home())
    if (home / ".ray" / "auth_token").exists():
        return
    made = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"],
        env=env,
        stdout=subprocess.DEVNULL,  # it prints the token: keep that out of logs
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise RayHeadError(f"could not make Ray's auth token: {made.stderr.strip()[-2000:]}")


def stop_head(pid: int, *, timeout_s: float = 30) -> None:
    """Stop the head whose `ray start` has this process id, and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def running_head(pid_file: Path) -> int | None:
    """The process id in ``pid_file`` if that process still runs."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


@contextlib.contextmanager
def local_head(ray_dir: Path) -> Iterator[RayHead]:
    """A head for the duration of the block; its pid lives in ``ray_dir/head.pid`` meanwhile,
    so a head left behind by a process that died is stopped before the next one starts."""
    pid_file = ray_dir / "head.pid"
    if (stale := running_head(pid_file)) is not None:
        stop_head(stale)
    # Not ray_dir itself: `ray start` records its address there, and a later local
    # `ray.init` with that temp folder would try to join the stopped head.
    head = start_head(ray_dir / "head", ray_dir / "head.log")
    pid_file.write_text(str(head.pid))
    try:
        yield head
    finally:
        stop_head(head.pid)
        pid_file.unlink(missing_ok=True)


def _answers(job_address: str) -> bool:
    # The dashboard serves HTTP once its modules (the job API among them) are loaded.
    try:
        with urllib.request.urlopen(f"{job_address}/api/gcs_healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (else it is not ours to wait on)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
