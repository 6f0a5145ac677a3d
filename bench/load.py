"""The robot-facing API under a fleet's load, on the embedded default (SQLite) and on PostgreSQL.

For each store it provisions robots on a scratch database (a fresh FLYWHEEL_HOME for SQLite,
a scratch database on the local PostgreSQL server, dropped afterwards), starts a real
``python -m cli serve`` process against it, and drives it with httpx from this process:

- steady: every robot posts one heartbeat every ``--period`` seconds (100 robots, 2 s: a
          fixed arrival rate of 50 requests/s, each robot at its own phase);
- burst:  all robots post at once;
- flood:  ``--flood`` clients post back to back, ``--flood-requests`` in all (the load
          under which SQLite used to collapse: every request waited 30 s on the pool).

A robot honours ``503``/``429`` with ``Retry-After`` as the simulated fleet's client does
(sim/robot_client.py): waits, with jitter, and retries the same heartbeat. A request is lost
when it never got a 2xx answer (an error, a timeout, or still refused after the last
attempt). While the load runs, ``/health`` is polled to show it stays quick.

It prints one row per store and phase (requests, p50/p99 of each answer, p99 until
accepted, 503s retried, lost, /health's slowest answer) and writes bench/results/load.json.

    .venv/bin/python bench/load.py [--robots 100] [--period 2] [--steady-s 30]
                                   [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.robot_client import RETRYABLE, retry_after_s  # noqa: E402  (after the path)

ATTEMPTS = 6  # as sim/robot_client.py: a heartbeat is given up after this many refusals

RESULTS = ROOT / "bench" / "results" / "load.json"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TIMEOUT_S = 35.0  # longer than SQLAlchemy's 30 s pool wait, so a queued request still counts

# Per-robot request headers: each robot's own credential, as enrollment issued it.
HeaderProvider = Callable[[str], dict[str, str]]


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # each answered attempt
    accepted: list[float] = field(default_factory=list)  # first attempt until the 2xx
    requests: int = 0
    refused: int = 0  # 503/429 answers that were retried
    lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    health_max_s: float = 0.0

    def row(self) -> dict:
        return {
            "phase": self.name,
            "requests": self.requests,
            "p50_ms": _ms(_quantile(self.latencies, 0.5)),
            "p99_ms": _ms(_quantile(self.latencies, 0.99)),
            "p99_accepted_ms": _ms(_quantile(self.accepted, 0.99)),
            "retried_503": self.refused,
            "lost": self.lost,
            "errors": self.errors,
            "health_max_ms": _ms(self.health_max_s),
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# -- one robot's request ----------------------------------------------------------------------


async def heartbeat(client: httpx.AsyncClient, robot_id: str, headers: dict, phase: Phase):
    """One heartbeat, retried on 503/429 after Retry-After (with jitter), as a robot would."""
    body = {
        "heartbeat_id": uuid.uuid4().hex,  # the same key on every retry of this heartbeat
        "policy_version": None,
        "successes": 1,
        "failures": 0,
        "interventions": 0,
        "active_seconds": 2.0,
    }
    phase.requests += 1
    first = time.perf_counter()
    for attempt in range(ATTEMPTS):
        start = time.perf_counter()
        try:
            answer = await client.post(f"/robots/{robot_id}/heartbeats", json=body, headers=headers)
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            phase.errors[kind] = phase.errors.get(kind, 0) + 1
            phase.lost += 1
            return
        phase.latencies.append(time.perf_counter() - start)
        if answer.status_code in RETRYABLE and attempt + 1 < ATTEMPTS:
            phase.refused += 1
            await asyncio.sleep(retry_after_s(answer) * random.uniform(1.0, 1.5))
            continue
        if answer.is_success:
            phase.accepted.append(time.perf_counter() - first)
        else:
            key = str(answer.status_code)
            phase.errors[key] = phase.errors.get(key, 0) + 1
            phase.lost += 1
        return


async def watch_health(client: httpx.AsyncClient, phase: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            await client.get("/health")
        phase.health_max_s = max(phase.health_max_s, time.perf_counter() - start)
        await asyncio.sleep(0.5)


# -- the phases -------------------------------------------------------------------------------


async def steady(client, robots, headers_for, period: float, seconds: float) -> Phase:
    phase = Phase("steady")

    async def robot(robot_id: str, offset: float) -> None:
        await asyncio.sleep(offset)
        tasks, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            tasks.append(
                asyncio.create_task(heartbeat(client, robot_id, headers_for(robot_id), phase))
            )
            next_at = start + period * len(tasks)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*tasks)

    await _with_health(
        client, phase, [robot(r, period * i / len(robots)) for i, r in enumerate(robots)]
    )
    return phase


async def burst(client, robots, headers_for) -> Phase:
    phase = Phase("burst")
    await _with_health(client, phase, [heartbeat(client, r, headers_for(r), phase) for r in robots])
    return phase


async def flood(client, robots, headers_for, clients: int, total: int) -> Phase:
    phase = Phase(f"flood {clients}")
    per_client = total // clients

    async def one(robot_id: str) -> None:
        for _ in range(per_client):
            await heartbeat(client, robot_id, headers_for(robot_id), phase)

    await _with_health(client, phase, [one(robots[i % len(robots)]) for i in range(clients)])
    return phase


async def _with_health(client, phase: Phase, work: list) -> None:
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=client.base_url, timeout=TIMEOUT_S) as probe:
        watcher = asyncio.create_task(watch_health(probe, phase, stop))
        await asyncio.gather(*work)
        stop.set()
        await watcher


async def drive(base_url: str, robots: list[str], headers_for: HeaderProvider, args) -> list[Phase]:
    # Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive ends them: at
    # httpx's default of 5 s too, a request could go out on a connection the server was
    # closing, and fail with a ReadError that says nothing about the API.
    limits = httpx.Limits(
        max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S, limits=limits) as client:
        phases = [await steady(client, robots, headers_for, args.period, args.steady_s)]
        phases.append(await burst(client, robots, headers_for))
        if args.flood:
            phases.append(await flood(client, robots, headers_for, args.flood, args.flood_requests))
    return phases


# -- a store and a server ---------------------------------------------------------------------


def provision(env: dict[str, str], count: int) -> tuple[list[str], HeaderProvider]:
    """Robots enrolled on the bench's store, through the service function `flywheel robots
    enroll` uses; returns them and each one's `Authorization` header."""
    os.environ.update(env)
    from services.config import Settings
    from services.serving.credentials import issue_fleet_credentials
    from services.store import migrate, session_scope
    from services.store.db import dispose_engines

    settings = Settings()
    migrate(settings.db_url)
    robots = [f"robot-{i:03d}" for i in range(count)]
    with session_scope(settings.db_url, write=True) as session:
        credentials = issue_fleet_credentials(
            session=session, robot_ids=robots, tasks=settings.fleet.tasks, actor="bench"
        )
    dispose_engines()
    return robots, lambda robot_id: {"Authorization": f"Bearer {credentials[robot_id]}"}


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}: see {log}")
        try:
            if httpx.get(f"{url}/live", timeout=1).is_success:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"serve did not start in 120 s: see {log}")


def run_store(store: str, scratch: Path, args) -> list[dict]:
    env = {
        "FLYWHEEL_HOME": str(scratch / store),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    database = None
    if store == "postgres":
        from sqlalchemy import create_engine, text

        database = f"flywheel_load_{uuid.uuid4().hex[:10]}"
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        env["FLYWHEEL_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    else:
        os.environ.pop("FLYWHEEL_DATABASE_URL", None)
    process = None
    try:
        robots, headers_for = provision(env, args.robots)
        process, url = serve(env, scratch / f"serve-{store}.log")
        phases = asyncio.run(drive(url, robots, headers_for, args))
        return [{"store": store, **p.row()} for p in phases]
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # still draining a backlog: stop it
                process.kill()
                process.wait()
        if database is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'store':<9}{'phase':<10}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99 ok ms':>11}{'503 retried':>13}{'lost':>6}{'health max ms':>15}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['store']:<9}{r['phase']:<10}{r['requests']:>9}{r['p50_ms'] or '-':>9}"
            f"{r['p99_ms'] or '-':>9}{r['p99_accepted_ms'] or '-':>11}{r['retried_503']:>13}"
            f"{r['lost']:>6}{r['health_max_ms']:>15}"
            + (f"  errors: {r['errors']}" if r["errors"] else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", type=int, default=100)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between heartbeats")
    parser.add_argument("--steady-s", type=float, default=30.0, help="length of the steady phase")
    parser.add_argument("--flood", type=int, default=50, help="clients of the flood; 0: none")
    parser.add_argument("--flood-requests", type=int, default=1000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="flywheel-load-") as scratch:
        for store in args.stores.split(","):
            rows += run_store(store, Path(scratch), args)
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    config = {
        k: getattr(args, k) for k in ("robots", "period", "steady_s", "flood", "flood_requests")
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    measured = {"date": time.strftime("%Y-%m-%d"), "commit": commit or None}
    RESULTS.write_text(json.dumps({**measured, "config": config, "rows": rows}, indent=2) + "\n")
    print(f"written: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
