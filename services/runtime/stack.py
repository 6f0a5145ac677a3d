"""Production mode on one machine: `flywheel up` / `flywheel down` (`make up` / `make down`).

`up` checks that the ports it needs are free (each is a setting, FLYWHEEL_<NAME>_PORT in
services/config.py), creates Flywheel's databases on the PostgreSQL server, then starts and
waits for: a Prefect server and an MLflow tracking server (both on PostgreSQL), the Flywheel
API in production mode, and a Ray head with its job API (services/runtime/ray_head.py):
nights submit their training to it as Ray jobs (FLYWHEEL_RAY_JOB_ADDRESS) and evaluate on it
(FLYWHEEL_RAY_ADDRESS).

The process ids, logs and the environment that points every `flywheel` command at the
services live in FLYWHEEL_HOME/run/; `down` stops each process group by its id.
Production settings refuse SQLite and placeholder secrets; `up` generates the secret key
once and keeps it in FLYWHEEL_HOME/run/secret_key (mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.config import Settings
from services.runtime.ports import Port, PortInUse, check_free
from services.runtime.ray_head import RayHeadError, start_head, stop_head

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Each port by its name: the setting ``<name>_port`` chooses it; and what listens there.
PORTS = {
    "prefect": "Prefect server",
    "mlflow": "MLflow server",
    "api": "Flywheel API",
    "ray": "Ray GCS",
    "ray_dashboard": "Ray dashboard and job API",
}
# The ports each service listens on.
LISTENS = {
    "prefect": ("prefect",),
    "mlflow": ("mlflow",),
    "api": ("api",),
    "ray": ("ray", "ray_dashboard"),
}
SERVICES = tuple(LISTENS)


class StackError(RuntimeError):
    """A service did not start; the message names it and ends with its log."""


@dataclass(frozen=True)
class Stack:
    home: Path
    # Port of each service, by the names in PORTS.
    ports: dict[str, int]
    # A PostgreSQL URL with the right to create databases; Flywheel's live beside it.
    admin_url: str = DEFAULT_ADMIN_URL
    # Database names get this prefix: flywheel, flywheel_mlflow, flywheel_prefect.
    prefix: str = "flywheel"
    host: str = "127.0.0.1"

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> Stack:
        ports = {name: getattr(settings.runtime, f"{name}_port") for name in PORTS}
        return cls(home=settings.home, ports=ports, **options)

    @property
    def run_dir(self) -> Path:
        return self.home.resolve() / "run"

    @property
    def env_file(self) -> Path:
        return self.run_dir / "production.env"

    def database_url(self, suffix: str = "", driver: str = "psycopg") -> str:
        url = make_url(self.admin_url).set(
            drivername=f"postgresql+{driver}", database=self.prefix + suffix
        )
        return url.render_as_string(hide_password=False)

    def environment(self) -> dict[str, str]:
        """What every `flywheel` command needs to use this stack."""
        h, p = self.host, self.ports
        return {
            "FLYWHEEL_HOME": str(self.home.resolve()),
            "FLYWHEEL_MODE": "production",
            "FLYWHEEL_DATABASE_URL": self.database_url(),
            "FLYWHEEL_MLFLOW_TRACKING_URI": f"http://{h}:{p['mlflow']}",
            "FLYWHEEL_SECRET_KEY": self._secret_key(),
            # Where the CLI sends people's actions (approve, rollouts, users) with its token.
            "FLYWHEEL_API_URL": f"http://{h}:{p['api']}",
            "PREFECT_API_URL": f"http://{h}:{p['prefect']}/api",
            "FLYWHEEL_RAY_ADDRESS": f"{h}:{p['ray']}",
            "FLYWHEEL_RAY_JOB_ADDRESS": f"http://{h}:{p['ray_dashboard']}",
        }

    def _secret_key(self) -> str:
        path = self.run_dir / "secret_key"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


def up(stack: Stack, *, timeout_s: float = 120) -> dict[str, str]:
    """Start what is not running yet; returns the environment (also in stack.env_file)."""
    _check_ports(stack)
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    _create_databases(stack)
    env = stack.environment()
    stack.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    stack.env_file.chmod(0o600)
    base = {**os.environ, **env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    bin_dir = Path(sys.executable).parent
    h, p = stack.host, stack.ports
    services = {
        "prefect": (
            [str(bin_dir / "prefect"), "server", "start", "--host", h, "--port", str(p["prefect"])],
            {
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": stack.database_url("_prefect", "asyncpg"),
                "PREFECT_HOME": str(stack.home.resolve() / "prefect"),
            },
            f"http://{h}:{p['prefect']}/api/health",
        ),
        "mlflow": (
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                h,
                "--port",
                str(p["mlflow"]),
                "--backend-store-uri",
                stack.database_url("_mlflow"),
                "--artifacts-destination",
                str(stack.home.resolve() / "mlartifacts"),
                "--workers",
                "1",
            ],
            {"MLFLOW_DISABLE_TELEMETRY": "true"},
            f"http://{h}:{p['mlflow']}/health",
        ),
        "api": (
            [str(bin_dir / "flywheel"), "serve", "--host", h, "--port", str(p["api"])],
            {},
            f"http://{h}:{p['api']}/health",
        ),
    }
    for name, (argv, extra, health) in services.items():
        if _running(stack, name):
            continue
        log = (stack.run_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env={**base, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (stack.run_dir / f"{name}.pid").write_text(str(process.pid))
        _wait_ready(stack, name, process, health, timeout_s)
    if not _running(stack, "ray"):
        try:
            head = start_head(
                stack.home.resolve() / "ray" / "head",
                stack.run_dir / "ray.log",
                host=h,
                port=p["ray"],
                dashboard_port=p["ray_dashboard"],
                env=base,
                timeout_s=timeout_s,
            )
        except RayHeadError as exc:
            raise StackError(str(exc)) from exc
        (stack.run_dir / "ray.pid").write_text(str(head.pid))
    return env


def down(stack: Stack, *, timeout_s: float = 20) -> list[str]:
    """Stop every service this stack started, by process id; returns their names."""
    stopped = []
    for name in ("api", "ray", "mlflow", "prefect"):
        pid_file = stack.run_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        if name == "ray":
            stop_head(pid, timeout_s=timeout_s)
        else:
            _stop_group(pid, timeout_s)
        pid_file.unlink()
        stopped.append(name)
    return stopped


def status(stack: Stack) -> dict[str, bool]:
    return {name: _running(stack, name) for name in SERVICES}


def _check_ports(stack: Stack) -> None:
    """Refuse at once when a port of a service that is not running yet is taken."""
    prefix = Settings.model_config["env_prefix"]
    wanted = [
        Port(stack.ports[name], PORTS[name], f"{prefix}{name.upper()}_PORT")
        for service, names in LISTENS.items()
        if not _running(stack, service)
        for name in names
    ]
    try:
        check_free(wanted)
    except PortInUse as exc:
        raise StackError(str(exc)) from None


def _create_databases(stack: Stack) -> None:
    admin = create_engine(stack.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            existing = set(conn.scalars(text("SELECT datname FROM pg_database")))
            for suffix in ("", "_mlflow", "_prefect"):
                name = stack.prefix + suffix
                if name not in existing:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise StackError(
            f"cannot create Flywheel's databases with {make_url(stack.admin_url)!r}: {exc}"
        ) from exc
    finally:
        admin.dispose()


def _running(stack: Stack, name: str) -> bool:
    pid_file = stack.run_dir / f"{name}.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def _wait_ready(stack, name, process, health: str | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if health is not None:
            try:
                with urllib.request.urlopen(health, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
        time.sleep(1)
    log = (stack.run_dir / f"{name}.log").read_text(errors="replace")[-2000:]
    _stop_group(process.pid, 5)
    raise StackError(f"{name} did not become ready in {timeout_s:.0f} s; its log ends:\n{log}")


def _stop_group(pid: int, timeout_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (else it is not ours to wait on)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
