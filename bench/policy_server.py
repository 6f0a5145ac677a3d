"""The policy server's latency and throughput, measured side by side in one run.

A fresh home gets two registered versions of Meta-World's shape (39-number state, 4-number
action): an MLP (256, 256) and an ACT policy (chunks of 8), and robots enrolled on each; then
``flywheel policy-server`` runs as its own process, as in production, and for each policy:

- in process: ``ServedModel.infer`` called directly (what the server runs per request),
  one torch thread, as the server runs it;
- through the server: one robot on a websocket (openpi's protocol: msgpack frames), batch 1;
  the difference at p50 and p99 is the server's own cost (goal: at most 1 ms at p99); the
  inference time the server reports in each answer (``server_timing``) shows how much of a
  difference is the model running slower in the server's process rather than the protocol;
- 4 and 16 robots at once, each sending its next observation as soon as its answer arrives:
  requests per second and the latency each robot sees (the queue on the server's inference
  threads, FLYWHEEL_POLICY_SERVER_THREADS, 2 by default);
- the same 4 and 16 robots with a shadow run under way (the other policy as the shadow:
  ACT beside the MLP's robots, the MLP beside ACT's), and how many steps the shadow logged
  and dropped (its bounded queue, FLYWHEEL_SHADOW_QUEUE_STEPS) while they ran.

The robots run in this process (asyncio, one thread) on the same machine as the server, so
they take CPU from it: on 2 cores the concurrent rows are an upper bound on queueing.

``--realtime`` runs the server and the robots at real-time priority (SCHED_FIFO, as a robot's
control loop and a dedicated inference host would), so that other work on a shared machine
stops deciding the tails; it needs root or CAP_SYS_NICE and writes
policy_server-realtime.json instead.

    .venv/bin/python bench/policy_server.py [--requests 2000] [--port 8475] [--realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "policy_server.json"
STATE_DIM, ACTION_DIM, TASK = 39, 4, "pick-place"


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _prepare_home(home: Path) -> dict[str, dict]:
    """Two registered versions, four robots on each; returns per policy its version and keys."""
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["FLYWHEEL_TASKS"] = json.dumps([TASK])
    import torch

    from policies import make_policy
    from policies.act import ACTConfig
    from policies.checkpoint import save_checkpoint
    from policies.mlp import MLPConfig
    from policies.normalization import NormalizationStats
    from services.config import Settings, configure_runtime
    from services.registry.ledger import promote
    from services.registry.mlflow_registry import register_candidate
    from services.serving.assignments import assign
    from services.serving.credentials import enroll_robot
    from services.store import migrate, session_scope
    from services.store.models import Candidate, Dataset

    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    rng = np.random.default_rng(0)
    stats = NormalizationStats.from_arrays(
        rng.normal(size=(100, STATE_DIM)).astype(np.float32),
        rng.normal(size=(100, ACTION_DIM)).astype(np.float32),
    )
    configs = {
        "mlp": MLPConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM, tasks=(TASK,)),
        "act": ACTConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM, tasks=(TASK,)),
    }
    served = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        checkpoint = save_checkpoint(home / name, make_policy(config), config, stats, {})
        version = register_candidate(
            settings,
            checkpoint_dir=checkpoint,
            candidate_id=f"bench-{name}",
            dataset_id="bench",
            parent_version=None,
            flow_run_id=None,
            code_version="bench",
            params={},
            losses=[],
            manifest_path=None,
        ).version
        served[name] = {"version": version, "keys": {}}
    with session_scope(settings.db_url, write=True) as session:
        # Candidate rows, so that either version can be started as the shadow run.
        session.add(Dataset(id="bench", scheme="uniform", n_episodes=1, n_steps=1, path="-"))
        session.flush()
        for name, info in served.items():
            session.add(
                Candidate(
                    id=f"bench-{name}",
                    model_name=settings.registry.model_name,
                    model_version=info["version"],
                    dataset_id="bench",
                    policy=name,
                )
            )
        promote(
            session=session,
            expected=None,
            new=served["mlp"]["version"],
            candidate_id=None,
            actor="bench",
            reason="bench",
        )
        for name in configs:
            robots = [f"{name}-{i:02d}" for i in range(16)]
            for robot in robots:
                served[name]["keys"][robot] = enroll_robot(
                    session=session, robot_id=robot, tasks=[TASK], group="default", actor="bench"
                )
            assign(
                session=session,
                robot_ids=robots,
                version=served[name]["version"],
                actor="bench",
                reason="bench",
            )
    return served


def _side_by_side(url: str, key: str, version: str, requests: int) -> tuple[dict, dict, dict]:
    """In process and through the server, call for call in turn, so that both see the same
    machine (other processes' load comes and goes)."""
    import torch
    from websockets.sync.client import connect

    from services.config import Settings
    from services.policy_server import codec
    from services.policy_server.models import load_served_model
    from services.policy_server.observations import Observation

    torch.set_num_threads(1)
    model = load_served_model(Settings(), version, warmup_calls=20)
    state = np.linspace(-1, 1, STATE_DIM, dtype=np.float32)
    observation = Observation(state=state, task=TASK, images={})
    # The inference time the server reports in each answer (server_timing.infer_ms).
    local, remote, there = [], [], []
    headers = {"Authorization": f"Api-Key {key}"}
    with connect(url, additional_headers=headers, compression=None) as ws:
        ws.recv()  # metadata
        for i in range(requests + 20):
            started = time.perf_counter()
            model.infer(observation)
            middle = time.perf_counter()
            ws.send(codec.packb({"observation.state": state, "task": TASK}))
            reply = ws.recv()
            if isinstance(reply, str):
                raise RuntimeError(reply)
            inside = codec.unpackb(reply)["server_timing"]["infer_ms"] / 1000
            if i >= 20:  # the first calls warm both paths
                local.append(middle - started)
                remote.append(time.perf_counter() - middle)
                there.append(inside)
    return _percentiles(local), _percentiles(remote), _percentiles(there)


async def _robot(url: str, key: str, requests: int, times: list[float]) -> None:
    from websockets.asyncio.client import connect

    from services.policy_server import codec

    state = np.linspace(-1, 1, STATE_DIM, dtype=np.float32)
    episode = f"bench-{key[-8:]}-{time.monotonic_ns()}"  # where a shadow logs the steps
    headers = {"Authorization": f"Api-Key {key}"}
    async with connect(url, additional_headers=headers, compression=None) as ws:
        await ws.recv()  # metadata
        for step in range(20 + requests):
            message = codec.packb(
                {"observation.state": state, "task": TASK, "episode_id": episode, "step": step}
            )
            if step < 20:  # warm the connection
                await ws.send(message)
                await ws.recv()
                continue
            started = time.perf_counter()
            await ws.send(message)
            reply = await ws.recv()
            times.append(time.perf_counter() - started)
            if isinstance(reply, str):
                raise RuntimeError(reply)
            codec.unpackb(reply)


async def _fleet(url: str, keys: list[str], requests: int) -> dict[str, float]:
    times: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_robot(url, key, requests, times) for key in keys))
    wall = time.perf_counter() - started
    return {**_percentiles(times), "requests_per_s": len(times) / wall}


def _shadow(home: Path, port: int, candidate_id: str, version: str) -> None:
    """Start ``candidate_id``'s shadow run and wait until the server runs it."""
    import httpx

    from services.config import Settings
    from services.shadow.runs import start_shadow
    from services.store import session_scope

    with session_scope(Settings().db_url, write=True) as session:
        start_shadow(session=session, candidate_id=candidate_id, actor="bench")
    for _ in range(600):
        shadow = httpx.get(f"http://127.0.0.1:{port}/health").json()["shadow"]
        if shadow is not None and shadow["version"] == version:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start shadow {version} in 60 s (see {home})")


def _shadow_counts(port: int) -> dict[str, int]:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/health").json()["shadow"]


def _counted(before: dict, after: dict) -> dict[str, int]:
    """The shadow's counts over one measurement (offered = logged + dropped + failed + still
    queued when it ended)."""
    names = ("offered", "logged", "dropped", "failed")
    return {f"shadow_{n}": after[n] - before[n] for n in names}


def _start_server(home: Path, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    log = open(home / "policy-server.log", "w")  # noqa: SIM115  (the server's, until it stops)
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "policy-server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"the policy server exited: see {home / 'policy-server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError("the policy server did not become ready in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per robot, batch 1")
    parser.add_argument("--port", type=int, default=8475)
    parser.add_argument(
        "--realtime", action="store_true", help="server and robots at SCHED_FIFO, as on a robot"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="policy-server-bench-"))
    served = _prepare_home(home)
    if args.realtime:  # after the preparation (MLflow): only the measured part runs ahead
        try:  # the server, started next, inherits it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        except (PermissionError, AttributeError) as error:
            raise SystemExit(f"--realtime needs root or CAP_SYS_NICE: {error}") from None
    server = _start_server(home, args.port)
    rows = []
    try:
        # The server has loaded both versions once healthy and every robot's route is set.
        url = f"ws://127.0.0.1:{args.port}/"
        for name, info in served.items():
            keys = list(info["keys"].values())
            local, one, inside = _side_by_side(url, keys[0], info["version"], args.requests)
            row = {
                "policy": name,
                "in_process": local,
                "server_1_robot": one,
                "inference_in_server": inside,
                "added_p50_ms": one["p50_ms"] - local["p50_ms"],
                "added_p99_ms": one["p99_ms"] - local["p99_ms"],
            }
            for robots in (4, 16):
                per_robot = max(50, args.requests // robots)
                row[f"server_{robots}_robots"] = asyncio.run(_fleet(url, keys[:robots], per_robot))
            rows.append(row)
        for row, info, other in zip(rows, served.values(), reversed(served), strict=True):
            keys = list(info["keys"].values())
            _shadow(home, args.port, f"bench-{other}", served[other]["version"])
            row["shadow"] = other
            for robots in (4, 16):
                per_robot = max(50, args.requests // robots)
                before = _shadow_counts(args.port)
                row[f"server_{robots}_robots_shadow"] = {
                    **asyncio.run(_fleet(url, keys[:robots], per_robot)),
                    **_counted(before, _shadow_counts(args.port)),
                }
    finally:
        server.terminate()
        server.wait(30)
    _print(rows)
    results = RESULTS.with_stem(RESULTS.stem + "-realtime") if args.realtime else RESULTS
    results.parent.mkdir(exist_ok=True)
    result = {
        "scheduling": "SCHED_FIFO" if args.realtime else "normal",
        "requests_per_robot": args.requests,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "rows": rows,
    }
    results.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {results}")


def _print(rows: list[dict]) -> None:
    print(f"{'policy':<6} {'where':<18} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for row in rows:
        wheres = ("in_process", "inference_in_server", "server_1_robot", "server_4_robots")
        for where in (*wheres, "server_16_robots"):
            r = row[where]
            rate = f"{r['requests_per_s']:8.0f}" if "requests_per_s" in r else f"{'':>8}"
            print(f"{row['policy']:<6} {where:<18} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {rate}")
        print(
            f"{row['policy']:<6} {'server adds':<18} {row['added_p50_ms']:8.3f} "
            f"{row['added_p99_ms']:8.3f}   (goal: <= 1 ms at p99)"
        )
        for robots in (4, 16):
            r = row.get(f"server_{robots}_robots_shadow")
            if r is None:
                continue
            where = f"{robots} + {row['shadow']} shadow"
            print(
                f"{row['policy']:<6} {where:<18} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
                f"{r['requests_per_s']:8.0f}   shadow: {r['shadow_offered']} offered, "
                f"{r['shadow_logged']} logged, {r['shadow_dropped']} dropped, "
                f"{r['shadow_offered'] - r['shadow_logged'] - r['shadow_dropped']} still queued"
            )
    print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
