"""The flywheel benchmark: does the loop make the simulated fleet better, and by how much?

Every arm runs the real loop (the fleet's shift through the robot API, MCAP upload, ingest,
Great Expectations, curation, Ray training, closed-loop evaluation, the gate, auto-approval
and a one-stage rollout) in its own FLYWHEEL_HOME, for several nights and seeds, from the
same weak start: a few lab demonstrations per task that cover half of the workspace. The
arms differ only in what a night does with the fleet's data (ARMS below); every arm has the
same fleet, shift and operator, so the same operator budget.

Midway the task mix shifts: from night SHIFT on, the fleet works only the last task, while
every task is still evaluated, so a policy that forgets the others shows it.

    .venv/bin/python bench/flywheel.py --quick     # under 10 minutes: 1 seed, 3 nights, 3 arms
    .venv/bin/python bench/flywheel.py             # the full run: 3 seeds, 5 nights, 7 arms

Results (markdown, CSV, PNG) land in bench/results/ (``--out``); see docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/flywheel.py`


@dataclass(frozen=True)
class Arm:
    name: str
    # What the arm's nights do; "none" keeps the lab's first policy on the fleet.
    label: str
    scheme: str = "sirius"
    learns: bool = True
    # Share replayed from what the champion has seen (None: all of it; 0: none).
    replay: float | None = None
    # Memory cap as a share of the steps the fleet and the lab produce over the run.
    cap_share: float | None = None


ARMS = {
    arm.name: arm
    for arm in (
        Arm("none", "no flywheel: the lab's policy stays on the fleet", learns=False),
        Arm("naive", "naive retraining on all data, every step weighted the same", "uniform"),
        Arm("hg-dagger", "HG-DAgger: interventions only, added to the demos", "hg-dagger"),
        Arm("iwr", "IWR: intervention and other samples 50/50", "iwr"),
        Arm("sirius", "Sirius weighting, replaying all earlier data", "sirius"),
        Arm(
            "sirius-cap", "Sirius with a memory cap (least-intervened evicted first)", cap_share=0.5
        ),
        Arm("sirius-no-replay", "Sirius on each night's new episodes only", replay=0.0),
    )
}


@dataclass(frozen=True)
class BenchConfig:
    tasks: tuple[str, ...] = ("reach", "push", "pick-place")
    seeds: tuple[int, ...] = (0, 1, 2)
    nights: int = 5
    # From this night on the fleet works only the last task (None: no shift).
    shift_night: int | None = 4
    robots: int = 4
    episodes_per_robot: int = 8
    lab_demos: int = 5
    # The gate's fixed evaluation seeds per task (0..n-1): the per-night success figures.
    eval_episodes: int = 25
    # Independent seeds on which each promotion is checked again (is the new champion worse?).
    audit_episodes: int = 20
    train_steps: int = 1500
    arms: tuple[str, ...] = tuple(ARMS)
    jobs: int = 3

    @property
    def run_steps(self) -> int:
        """About how many steps the lab and the fleet produce over the run (for the cap)."""
        steps_per_episode = 120
        fleet = self.nights * self.robots * self.episodes_per_robot
        return (fleet + self.lab_demos * len(self.tasks)) * steps_per_episode


QUICK = BenchConfig(
    seeds=(0,),
    nights=3,
    shift_night=None,
    episodes_per_robot=6,
    eval_episodes=20,
    audit_episodes=10,
    train_steps=1500,
    arms=("none", "iwr", "sirius"),
    jobs=3,
)

AUDIT_SEEDS = 5_000_000  # evaluation seed range, apart from the gate's 0..n-1
MANAGER = "bench-fleet-manager"
# The benchmark's fleet manager, for what the gate leaves to a human (inconclusive): approve
# when the candidate is better overall by the gate's own paired test and no task's success
# falls more than this far below the champion's; otherwise reject.
MANAGER_ALPHA = 0.05
MANAGER_MARGIN = 0.10


# --- one arm, one seed: a worker process of its own -------------------------------------


def arm_environment(arm: Arm, seed: int, config: BenchConfig, home: Path) -> dict[str, str]:
    env = {
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_TASKS": json.dumps(list(config.tasks)),
        "FLYWHEEL_SIM_SEED": str(seed),
        "FLYWHEEL_SCHEME": arm.scheme,
        "FLYWHEEL_EVAL_EPISODES": str(config.eval_episodes),
        "FLYWHEEL_TRAIN_STEPS": str(config.train_steps),
        "FLYWHEEL_AUTO_APPROVE": "true",
        # A passing candidate goes to the whole fleet at once: one stage per night.
        "FLYWHEEL_ROLLOUT_STAGES": "[1.0]",
        # Every operator-labelled episode trains: offline hold-out is not what is measured.
        "FLYWHEEL_HOLDOUT_SHARE": "0",
    }
    if arm.replay is not None:
        env["FLYWHEEL_REPLAY_SHARE"] = str(arm.replay)
    if arm.cap_share is not None:
        env["FLYWHEEL_DATASET_MAX_STEPS"] = str(int(arm.cap_share * config.run_steps))
    return env


def run_arm(arm: Arm, seed: int, config: BenchConfig, out: Path, nights: tuple[int, int]) -> None:
    """Nights ``first..last`` (night 0: lab demos, the first policy); one JSON line each."""
    from services.config import configure_runtime, get_settings
    from services.store import migrate

    settings = get_settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    from services.runtime.ray_driver import shutdown_ray
    from services.runtime.ray_head import local_head

    # One Ray head for the arm's nights, as `flywheel up` keeps one: each night's training is
    # a Ray job submitted to it, without a head started and stopped per night.
    with local_head(settings.ray_dir) as head, out.open("w") as sink:
        os.environ["FLYWHEEL_RAY_JOB_ADDRESS"] = head.job_address
        try:
            for night in range(nights[0], nights[1] + 1):
                sink.write(json.dumps(run_night(arm, seed, night, config)) + "\n")
                sink.flush()
        finally:
            shutdown_ray()


def run_night(arm: Arm, seed: int, night: int, config: BenchConfig) -> dict:
    """The fleet's shift, then (for a learning arm, or night 0) the nightly flow."""
    from flows.nightly import nightly
    from flows.simulation import fleet_shift
    from services.run_settings import load_run_settings

    if config.shift_night is not None and night >= config.shift_night:
        os.environ["FLYWHEEL_FLEET_TASKS"] = json.dumps([config.tasks[-1]])
    settings = load_run_settings()
    started = time.perf_counter()
    shift = fleet_shift(settings, night, config.robots, config.episodes_per_robot, config.lab_demos)
    report = nightly(settings) if (arm.learns or night == 0) else None
    decision = fleet_manager_review(report)
    record = night_record(arm, seed, night, shift, report, config)
    if decision:
        record["candidate"]["manager"] = decision
    record["night_seconds"] = time.perf_counter() - started
    return record


def fleet_manager_review(report: dict | None) -> str | None:
    """Decide an inconclusive candidate as the benchmark's fleet manager, and roll an
    approved one out before the next shift (what the next night would do first)."""
    from sqlalchemy import select

    from services.approval.decisions import approve, reject
    from services.approval.late import roll_out_approved
    from services.approval.users import add_user, get_user
    from services.config import get_settings
    from services.store import session_scope
    from services.store.models import Decision, User

    candidate = (report or {}).get("candidate")
    if not candidate or candidate["verdict"] != "inconclusive":
        return None
    settings = get_settings()
    with session_scope(settings.db_url, write=True) as session:
        if session.get(User, MANAGER) is None:
            add_user(session=session, name=MANAGER, role="fleet-manager")
            session.flush()
        gate = session.scalar(
            select(Decision).where(
                Decision.candidate_id == candidate["id"], Decision.kind == "gate"
            )
        )
        numbers = gate.details
        worst = max(
            t["champion"]["rate"] - t["candidate"]["rate"] for t in numbers["tasks"].values()
        )
        better = numbers["p_value"] < MANAGER_ALPHA
        user = get_user(session=session, name=MANAGER)
        if better and worst <= MANAGER_MARGIN:
            approve(
                session=session,
                candidate_id=candidate["id"],
                user=user,
                reason=f"better overall (p={numbers['p_value']:.3f}); worst task drop "
                f"{worst:+.0%} within {MANAGER_MARGIN:.0%}",
            )
            verdict = "approved"
        else:
            reject(
                session=session,
                candidate_id=candidate["id"],
                user=user,
                reason=f"p={numbers['p_value']:.3f}, worst task drop {worst:+.0%}",
            )
            verdict = "rejected"
    if verdict == "approved":
        roll_out_approved(settings, actor=MANAGER)
    return verdict


def night_record(
    arm: Arm, seed: int, night: int, shift: dict, report: dict | None, config: BenchConfig
) -> dict:
    from services.config import get_settings
    from services.evaluation.closed_loop import evaluate_version
    from services.registry.ledger import champion_of
    from services.registry.mlflow_registry import policy_checkpoint
    from services.store import session_scope
    from services.store.models import Candidate, Dataset
    from services.twin.tasks import make_env

    settings = get_settings()
    with session_scope(settings.db_url) as session:
        champion = champion_of(session=session)
    record: dict = {
        "arm": arm.name,
        "seed": seed,
        "night": night,
        "fleet_tasks": list(settings.fleet.shift_tasks),
        "champion": champion,
    }
    summary = shift.get("shift")
    if summary is not None:
        hz = make_env(config.tasks[0]).control_hz
        record["shift"] = {
            "episodes": summary.episodes,
            "successes": summary.successes,
            "autonomous_successes": summary.autonomous_successes,
            "interventions": summary.interventions,
            "operator_steps": summary.operator_steps,
            "steps": summary.steps,
            "robot_hours": summary.steps / hz / 3600,
            "operator_hours": summary.operator_steps / hz / 3600,
        }
    candidate = (report or {}).get("candidate")
    if candidate:
        with session_scope(settings.db_url) as session:
            row = session.get(Candidate, candidate["id"])
            dataset = session.get(Dataset, row.dataset_id)
            record["candidate"] = {
                "version": candidate["version"],
                "parent": candidate["parent"],
                "verdict": candidate["verdict"],
                "promoted": champion == candidate["version"],
                "train_seconds": row.train_seconds,
                "dataset_steps": dataset.n_steps,
                "dataset_episodes": dataset.n_episodes,
            }
    if champion is None:
        return record
    seeds = range(config.eval_episodes)
    outcomes = evaluate_version(
        settings, champion, policy_checkpoint(settings, champion), config.tasks, seeds
    )
    record["eval"] = {t: [bool(outcomes[t][s]) for s in seeds] for t in config.tasks}
    if candidate:
        # The candidate as the gate saw it, promoted or not (stored by the gate's evaluation,
        # so read back, not run again): forgetting shows here first, as the gate refuses it.
        version = candidate["version"]
        if version != champion:
            outcomes = evaluate_version(
                settings, version, policy_checkpoint(settings, version), config.tasks, seeds
            )
        record["candidate"]["eval"] = {
            t: [bool(outcomes[t][s]) for s in seeds] for t in config.tasks
        }
    promoted = record.get("candidate", {}).get("promoted")
    if promoted and record["candidate"]["parent"]:  # checked again on seeds the gate never saw
        audit = range(AUDIT_SEEDS, AUDIT_SEEDS + config.audit_episodes)
        parent = record["candidate"]["parent"]
        record["audit"] = {
            role: {
                t: [bool(o[s]) for s in audit]
                for t, o in evaluate_version(
                    settings, version, policy_checkpoint(settings, version), config.tasks, audit
                ).items()
            }
            for role, version in (("candidate", champion), ("parent", parent))
        }
    return record


# --- the driver: every (arm, seed) as a worker process, then the figures -----------------


def run_all(config: BenchConfig, work: Path, out: Path) -> list[dict]:
    """Night 0 once per seed (the lab: identical in every arm), then every (arm, seed) from a
    copy of that seed's lab home, each in a worker process of its own."""
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    def worker(arm: Arm, seed: int, name: str, nights: tuple[int, int]) -> Path:
        lines, log_file = work / f"{name}-s{seed}.jsonl", work / f"{name}-s{seed}.log"
        home = work / f"{name}-s{seed}"
        env = {**os.environ, **arm_environment(arm, seed, config, home)}
        started = time.perf_counter()
        with log_file.open("w") as log:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    arm.name,
                    str(seed),
                    "--config",
                    json.dumps(asdict(config)),
                    "--lines",
                    str(lines),
                    "--worker-nights",
                    *map(str, nights),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        took = time.perf_counter() - started
        if proc.returncode != 0:
            raise WorkerFailed(
                f"{name} seed {seed} failed (exit {proc.returncode}) after {took:.0f} s; "
                f"see {log_file}"
            )
        print(f"  {name:17s} seed {seed}: {took:5.0f} s", flush=True)
        return lines

    def lab(seed: int) -> list[dict]:
        shutil.rmtree(work / f"lab-s{seed}", ignore_errors=True)
        lines = worker(ARMS["none"], seed, "lab", (0, 0))
        settle_home(work / f"lab-s{seed}")
        return [json.loads(line) for line in lines.read_text().splitlines()]

    def arm_run(arm: Arm, seed: int) -> list[dict]:
        night_zero = labs[seed].result()
        home = work / f"{arm.name}-s{seed}"
        shutil.rmtree(home, ignore_errors=True)
        copy_home(work / f"lab-s{seed}", home)
        lines = worker(arm, seed, arm.name, (1, config.nights))
        later = [json.loads(line) for line in lines.read_text().splitlines()]
        return [{**record, "arm": arm.name} for record in night_zero] + later

    # Labs first: an arm's thread waits for its seed's lab, which by then has a thread.
    with ThreadPoolExecutor(max_workers=config.jobs) as pool:
        labs = {seed: pool.submit(lab, seed) for seed in config.seeds}
        runs = [pool.submit(arm_run, ARMS[a], s) for s in config.seeds for a in config.arms]
        records: list[dict] = []
        failures: dict[str, None] = {}  # a failed lab fails each of its arms: named once
        for run in runs:  # the other arms go on; the report names the failures
            try:
                records += run.result()
            except WorkerFailed as failure:
                failures[str(failure)] = None
    if failures:
        for failure in failures:
            print(f"  {failure}", flush=True)
        raise SystemExit("flywheel benchmark: " + "; ".join(failures))
    return records


class WorkerFailed(RuntimeError):
    """A worker process exited with an error; the message names its log."""


def settle_home(home: Path) -> None:
    """Fold SQLite's write-ahead logs into the database files, once the home's worker has
    ended, so that a copy of the ``.db`` files alone holds everything."""
    for database in home.glob("*.db"):
        with contextlib.closing(sqlite3.connect(database)) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"{database} is still in use: its home cannot be copied yet")


def copy_home(source: Path, target: Path) -> None:
    """Copy a settled FLYWHEEL_HOME and make it stand on its own: the paths that Flywheel's
    and MLflow's databases and MLflow's MLmodel files hold are rewritten from source to
    target. Ray's head folder stays behind (each worker starts a head of its own)."""
    unsettled = [p for p in source.glob("*.db-wal") if p.stat().st_size]
    if unsettled:
        raise RuntimeError(f"{unsettled[0]} holds writes not yet in its database: settle first")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ray", "*.db-wal", "*.db-shm"))
    relocate_home(target, str(source), str(target))


def relocate_home(home: Path, old: str, new: str) -> None:
    """Rewrite the absolute path ``old`` to ``new`` wherever a home's files hold it: SQLite
    databases column by column, text files (MLmodel...) as text."""
    for path in home.rglob("*"):
        if not path.is_file() or path.stat().st_size == 0:
            continue
        data = path.read_bytes()
        if old.encode() not in data:
            continue
        if data.startswith(b"SQLite format 3\0"):
            relocate_sqlite(path, old, new)
        else:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                raise RuntimeError(f"{path} holds {old} and is neither SQLite nor text") from None
            path.write_text(text.replace(old, new))


def relocate_sqlite(path: Path, old: str, new: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], column[2].upper()
                if any(word in kind for word in ("CHAR", "TEXT", "CLOB", "JSON")) or not kind:
                    db.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (old, new, old),
                    )


def complete_seeds(records: list[dict], config: BenchConfig) -> list[dict]:
    """The records of the seeds that every arm has finished (a run stopped part-way)."""
    nights = {(r["arm"], r["seed"]): 0 for r in records}
    for r in records:
        nights[(r["arm"], r["seed"])] += 1
    arms = sorted({arm for arm, _ in nights})
    seeds = sorted(
        s
        for s in {seed for _, seed in nights}
        if all(nights.get((a, s), 0) == config.nights + 1 for a in arms)
    )
    dropped = sorted({seed for _, seed in nights} - set(seeds))
    if dropped:
        print(f"(seeds {dropped} are not finished by every arm: left out)", flush=True)
    return [r for r in records if r["seed"] in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 nights, 3 arms")
    parser.add_argument("--seeds", type=int, help="number of seeds")
    parser.add_argument(
        "--add-seeds",
        help="comma-separated seeds to run and pool with the records already kept in --out",
    )
    parser.add_argument("--nights", type=int, help="nights after the lab's night 0")
    parser.add_argument("--arms", help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--jobs", type=int, help="arms run side by side (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / ".flywheel" / "bench")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="redo the figures from the worker files under --work",
    )
    parser.add_argument("--worker", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-nights", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        raw = json.loads(args.config)
        config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        arm, seed = ARMS[args.worker[0]], int(args.worker[1])
        return run_arm(arm, seed, config, args.lines, tuple(args.worker_nights))

    config = QUICK if args.quick else BenchConfig()
    if args.seeds:
        config = replace(config, seeds=tuple(range(args.seeds)))
    earlier: list[dict] = []
    if args.add_seeds:
        if args.seeds or args.report_only:
            parser.error("--add-seeds runs the seeds it names: not with --seeds or --report-only")
        try:
            added = tuple(int(x) for x in args.add_seeds.split(","))
        except ValueError:
            parser.error(f"--add-seeds takes seeds like 3,4, not {args.add_seeds!r}")
        config = replace(config, seeds=added)
    if args.nights:
        config = replace(config, nights=args.nights)
    if args.arms:
        unknown = set(args.arms.split(",")) - set(ARMS)
        if unknown:
            parser.error(f"unknown arms {sorted(unknown)}; known: {', '.join(ARMS)}")
        config = replace(config, arms=tuple(args.arms.split(",")))
    if args.jobs:
        config = replace(config, jobs=args.jobs)
    mode = "quick" if args.quick else "full"
    work = args.work / mode

    from bench.flywheel_report import write_report

    # Every night's record (evaluation outcomes per seed, the shift, the candidate) is kept
    # next to the figures, so a later run can redo or extend them without the work folder.
    kept = args.out / f"flywheel-{mode}-records.jsonl"
    if args.add_seeds and kept.exists():
        earlier = [
            r
            for r in map(json.loads, kept.read_text().splitlines())
            if r["seed"] not in config.seeds
        ]
    started = time.perf_counter()
    if args.report_only:
        files = sorted(work.glob("*.jsonl")) or ([kept] if kept.exists() else [])
        if not files:
            parser.error(f"no worker files under {work} and no {kept}: nothing to report")
        records = complete_seeds(
            [json.loads(line) for f in files for line in f.read_text().splitlines()], config
        )
    else:
        print(
            f"flywheel benchmark ({mode}): {len(config.arms)} arms x {len(config.seeds)} "
            f"seeds x {config.nights} nights, tasks {', '.join(config.tasks)}",
            flush=True,
        )
        records = run_all(config, work, args.out)
        if earlier:
            records = complete_seeds(earlier + records, config)
    minutes = None if args.report_only else (time.perf_counter() - started) / 60
    write_report(records, config, args.out, mode, minutes)
    kept.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


if __name__ == "__main__":
    main()
