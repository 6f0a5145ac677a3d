"""Can field evidence be trusted? The field gate's verdict against the closed-loop gate's, on
a task that has a twin (issue 21).

    .venv/bin/python bench/field_agreement.py [--episodes 12] [--robots 4] [--quick]

On pick-place, which the simulator can run, every candidate is judged both ways:

- **closed loop**, as the nightly gate judges it: 100 paired seeds against the champion
  (``FLYWHEEL_EVAL_EPISODES``), McNemar plus non-inferiority (``services/evaluation/gate.py``);
- **field**, as if pick-place had no twin: a shift of the simulated fleet on the champion with
  the candidate as the shadow run, ingested, and judged by the field gate
  (``services/shadow/field_gate.py``) on the thresholds of ``make demo-field``.

The candidates are fine-tunes of one champion on one dataset with the training settings a
night might be given (steps, learning rate, seed), from barely trained (close to the
champion) to a learning rate high enough to damage it, so that some are better, some about
the same and some worse. Each candidate's shadow shift has seeds of its own.

It prints, per candidate, both verdicts and the numbers behind them, then how often the
field verdict equals the closed-loop one, and its **false-pass rate**: field pass where the
closed loop says fail, and field pass where the candidate's closed-loop success is not above
the champion's. The closed loop is the reference here, not the truth: it has its own errors
(100 seeds). Writes ``bench/results/field_agreement.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "field_agreement.json"
TASK = "pick-place"
# The thresholds `make demo-field` sets (docs/shadow.md).
THRESHOLDS = {
    "min_episodes": 12,
    "max_distance_difference": 0.0,
    "min_agreement": 0.5,
    "min_successes": 4,
    "alpha": 0.05,
}
# (training steps, learning rate, seed) of each candidate.
CANDIDATES = (
    (3000, 1e-3, 0),
    (3000, 1e-3, 1),
    (1000, 1e-3, 2),
    (300, 1e-3, 3),
    (30, 1e-3, 4),
    (3000, 1e-4, 5),
    (1000, 3e-2, 6),
    (3000, 3e-2, 7),
)
QUICK = ((1000, 1e-3, 0), (1000, 3e-2, 1))


def _settings(home: Path):
    os.environ.update(
        FLYWHEEL_HOME=str(home),
        FLYWHEEL_TASKS=json.dumps([TASK]),
        FLYWHEEL_SIM_CAMERAS="[]",
        FLYWHEEL_EVAL_EPISODES="100",
        # The first policy becomes champion (night 0 approves it); the candidates below are
        # judged, never approved or rolled out: the champion stays the same throughout.
        FLYWHEEL_AUTO_APPROVE="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    from services.config import Settings, configure_runtime
    from services.store import migrate

    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=12, help="per robot per shadow shift")
    parser.add_argument("--quick", action="store_true", help="two candidates (a check)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="field-agreement-"))
    settings = _settings(home)

    from flows.simulation import fleet_shift, simulate_nights
    from services.curation.manifest import build_manifest
    from services.evaluation.gate import judge, record_verdict
    from services.evaluation.paired import evaluate_against_champion
    from services.ingest.batch import ingest_logs
    from services.shadow.field_gate import FieldThresholds, judge_field
    from services.shadow.report import ReportConfig, collect, summarise
    from services.shadow.runs import end_shadow, start_shadow
    from services.store import session_scope
    from services.store.models import ShadowRun
    from services.training.config import TrainConfig
    from services.training.stage import train_and_register

    started = time.perf_counter()
    # The champion: the lab's demonstrations, night 0. Then one shift of the fleet on it,
    # the dataset every candidate is fine-tuned on.
    simulate_nights(nights_to_run=1, robots=args.robots, episodes_per_robot=args.episodes)
    fleet_shift(settings, 1, args.robots, args.episodes, 0)
    ingest_logs(settings)
    dataset = build_manifest(settings, scheme=settings.curation.scheme)
    thresholds = FieldThresholds(**THRESHOLDS)
    rows = []
    for night, (steps, lr, seed) in enumerate(QUICK if args.quick else CANDIDATES, start=2):
        config = TrainConfig(steps=steps, lr=lr, seed=seed, checkpoint_every=max(steps, 1))
        candidate = train_and_register(settings, dataset_id=dataset.id, config=config)
        evaluations = evaluate_against_champion(settings, candidate.id)
        closed = record_verdict(settings.db_url, candidate.id, judge(evaluations))
        [pick] = evaluations
        with session_scope(settings.db_url, write=True) as session:
            run_id = start_shadow(session=session, candidate_id=candidate.id, actor="bench").id
        shift = fleet_shift(settings, night, args.robots, args.episodes, 0)
        ingest_logs(settings)
        with session_scope(settings.db_url, write=True) as session:
            run = session.get(ShadowRun, run_id)
            end_shadow(session=session, run=run, actor="bench", reason="measured")
            session.expunge(run)
        evidence = collect(settings, run, ReportConfig())
        field = judge_field(evidence, [TASK], thresholds)
        numbers = field.numbers["tasks"][TASK]
        rows.append(
            {
                "candidate": candidate.model_version,
                "steps": steps,
                "lr": lr,
                "seed": seed,
                "closed_loop": {
                    "candidate": pick.candidate.successes,
                    "champion": pick.champion.successes,
                    "n": pick.candidate.n,
                    "verdict": closed.verdict,
                    "reason": closed.reason,
                },
                "field": {
                    "verdict": field.verdict,
                    "reason": numbers["reason"],
                    "episodes": numbers["episodes"],
                    "distance_difference": numbers.get("distance_difference"),
                    "distance_difference_bounds": numbers.get("distance_difference_bounds"),
                    "agreement": numbers.get("agreement"),
                    "agreement_bounds": numbers.get("agreement_bounds"),
                    "report": summarise(evidence)["tasks"].get(TASK),
                    "counts": evidence.counts,
                },
                "shift_episodes": shift["shift"].episodes,
            }
        )
        _print_row(rows[-1])
    summary = _summary(rows)
    print(json.dumps(summary, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "thresholds": THRESHOLDS,
                "robots": args.robots,
                "episodes_per_robot": args.episodes,
                "seconds": time.perf_counter() - started,
                "load_average_1m_at_end": os.getloadavg()[0],
                "rows": rows,
                "summary": summary,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written: {RESULTS} ({time.perf_counter() - started:.0f} s)")


def _print_row(row: dict) -> None:
    c, f = row["closed_loop"], row["field"]
    bounds = f["distance_difference_bounds"]
    shown = f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}]" if bounds else "-"
    print(
        f"v{row['candidate']} steps {row['steps']} lr {row['lr']:g}: closed loop "
        f"{c['candidate']}/{c['n']} vs {c['champion']}/{c['n']} {c['verdict']}; field "
        f"{f['verdict']} (difference {shown}, agreement {f['agreement_bounds']}, "
        f"{f['episodes']} episodes: {f['reason']})",
        flush=True,
    )


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    same = sum(r["field"]["verdict"] == r["closed_loop"]["verdict"] for r in rows)
    field_pass = [r for r in rows if r["field"]["verdict"] == "pass"]
    closed_fail = [r for r in rows if r["closed_loop"]["verdict"] == "fail"]
    not_better = [r for r in rows if r["closed_loop"]["candidate"] <= r["closed_loop"]["champion"]]
    return {
        "candidates": n,
        "verdicts_equal": same,
        "field_pass": len(field_pass),
        "closed_loop_pass": sum(r["closed_loop"]["verdict"] == "pass" for r in rows),
        "closed_loop_fail": len(closed_fail),
        "false_pass_of_closed_loop_fails": sum(
            r["field"]["verdict"] == "pass" for r in closed_fail
        ),
        "not_better_in_closed_loop": len(not_better),
        "false_pass_of_not_better": sum(r["field"]["verdict"] == "pass" for r in not_better),
    }


if __name__ == "__main__":
    main()
