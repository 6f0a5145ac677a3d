"""Closed-loop evaluation in the simulator, candidate paired with the champion on fixed seeds.

Each (model version, task, seed) episode is run once and stored; the champion's episodes
from the night it was itself a candidate are reused, so a night evaluates only the new model.
Evaluation seeds are 0..n-1 for every task; the fleet and the lab demos never use them.

A vision policy sees the cameras it was trained on, rendered at the simulated robots' size
and rate and passed through the store's codecs as its training frames were
(``services.twin.eyes``). A policy that predicts chunks of actions runs them with ACT's
temporal ensembling (``LoadedPolicy.start_episode``), as a robot does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from services.config import Settings
from services.episodes.cameras import VideoFormat
from services.evaluation.stats import Rate, wilson
from services.evaluation.trajectories import trajectory_path, write_trajectory
from services.runtime.ray_driver import ensure_ray
from services.store import session_scope
from services.store.models import Candidate, Evaluation, EvaluationEpisode
from services.twin.autonomous import run_autonomous
from services.twin.eyes import policy_cameras
from services.twin.render import CameraSetup
from services.twin.tasks import make_env

# Names the evaluation protocol (simulator, episode length, no operator, chunks ensembled,
# cameras as the robots record them). Results are only paired within one suite; bump it when
# the protocol changes.
SUITE = "closed-loop-v2"


@dataclass(frozen=True)
class View:
    """How a vision policy's cameras are rendered: the simulated robots' cameras (None: they
    have none) and the store's video format its training frames were decoded from."""

    cameras: CameraSetup | None
    video_format: VideoFormat

    @classmethod
    def from_settings(cls, settings: Settings) -> View:
        return cls(
            CameraSetup.from_settings(settings.fleet), VideoFormat.from_settings(settings.video)
        )


@dataclass(frozen=True)
class TaskEvaluation:
    task: str
    candidate: Rate
    champion: Rate | None
    # Seeds where only the candidate / only the champion succeeded (McNemar's discordant pairs).
    candidate_only: int
    champion_only: int
    failed_seeds: tuple[int, ...]
    # Per-seed outcomes in seed order, paired (empty for the champion without one).
    candidate_outcomes: tuple[bool, ...] = ()
    champion_outcomes: tuple[bool, ...] = ()


def _run_episodes(checkpoint: str, items: list[tuple[str, int]], view: View) -> list[tuple]:
    """One worker's share: load the policy and the simulator once, run its episodes and
    return each one's outcome and trajectory."""
    # In the Ray worker only: policies.checkpoint brings torch, which the gate and the API
    # (they import this module for TaskEvaluation) do not need.
    from policies.checkpoint import load_checkpoint

    policy = load_checkpoint(Path(checkpoint))
    results = []
    with contextlib.ExitStack() as stack:
        looks = {}
        envs = {}
        for task in sorted({t for t, _ in items}):
            envs[task] = make_env(task)
            looks[task] = stack.enter_context(
                policy_cameras(envs[task], policy.cameras, view.cameras, view.video_format)
            )
        for task, seed in items:
            r = run_autonomous(
                envs[task], seed, policy.start_episode(), record=True, look=looks[task]()
            )
            results.append(
                (
                    task,
                    seed,
                    bool(r.success),
                    int(r.steps),
                    float(r.final_reward),
                    r.states,
                    r.actions,
                    r.rewards,
                )
            )
    return results


def evaluate_version(
    settings: Settings,
    version: str,
    checkpoint: Path,
    tasks: Sequence[str],
    seeds: Sequence[int],
) -> dict[str, dict[int, bool]]:
    """Success per task and seed for one model version; runs only what is not stored yet.

    The missing episodes are shared out as Ray tasks, one per CPU of the Ray cluster (each
    loads the policy and the simulator once), on the same Ray that trains.
    """
    import ray

    with session_scope(settings.db_url) as session:
        rows = session.scalars(
            select(EvaluationEpisode).where(
                EvaluationEpisode.model_version == version, EvaluationEpisode.suite == SUITE
            )
        ).all()
    done = {(r.task, r.seed): r.success for r in rows}
    missing = [(t, s) for t in tasks for s in seeds if (t, s) not in done]
    if missing:
        ensure_ray(settings)
        workers = max(1, min(len(missing), int(ray.cluster_resources().get("CPU", 1))))
        run = ray.remote(num_cpus=1)(_run_episodes)
        shares = [missing[w::workers] for w in range(workers)]
        view = View.from_settings(settings)
        results = [
            r
            for part in ray.get([run.remote(str(checkpoint), s, view) for s in shares])
            for r in part
        ]
        with session_scope(settings.db_url) as session:
            for task, seed, success, steps, reward, *trajectory in results:
                done[(task, seed)] = success
                write_trajectory(trajectory_path(settings, SUITE, version, task, seed), *trajectory)
                session.add(
                    EvaluationEpisode(
                        model_version=version,
                        task=task,
                        seed=seed,
                        suite=SUITE,
                        success=success,
                        steps=steps,
                        final_reward=reward,
                    )
                )
    return {task: {seed: done[(task, seed)] for seed in seeds} for task in tasks}


def compare(
    candidate: dict[str, dict[int, bool]], champion: dict[str, dict[int, bool]] | None
) -> list[TaskEvaluation]:
    """Pair candidate and champion per task on the same seeds."""
    evaluations = []
    for task, by_seed in candidate.items():
        seeds = sorted(by_seed)
        cand = [by_seed[s] for s in seeds]
        champ = [champion[task][s] for s in seeds] if champion else None
        evaluations.append(
            TaskEvaluation(
                task=task,
                candidate=wilson(sum(cand), len(cand)),
                champion=wilson(sum(champ), len(champ)) if champ is not None else None,
                candidate_only=sum(c and not h for c, h in zip(cand, champ, strict=True))
                if champ
                else 0,
                champion_only=sum(h and not c for c, h in zip(cand, champ, strict=True))
                if champ
                else 0,
                failed_seeds=tuple(s for s, ok in zip(seeds, cand, strict=True) if not ok),
                candidate_outcomes=tuple(cand),
                champion_outcomes=tuple(champ or ()),
            )
        )
    return evaluations


def store_evaluations(
    settings: Settings,
    candidate_id: str,
    champion_version: str | None,
    evaluations: list[TaskEvaluation],
    offline: dict[str, dict] | None = None,
) -> None:
    """One row per task; re-evaluating the same candidate replaces nothing and adds nothing.

    ``offline`` holds each task's offline metrics on held-out episodes, if any.
    """
    offline = offline or {}
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        for ev in evaluations:
            exists = session.scalar(
                select(Evaluation).where(
                    Evaluation.candidate_id == candidate_id,
                    Evaluation.task == ev.task,
                    Evaluation.suite == SUITE,
                )
            )
            if exists is not None:
                continue
            session.add(
                Evaluation(
                    candidate_id=candidate_id,
                    champion_version=champion_version,
                    task=ev.task,
                    suite=SUITE,
                    n=ev.candidate.n,
                    candidate_successes=ev.candidate.successes,
                    champion_successes=ev.champion.successes if ev.champion else None,
                    candidate_only=ev.candidate_only,
                    champion_only=ev.champion_only,
                    metrics={
                        "candidate_ci": [ev.candidate.low, ev.candidate.high],
                        "champion_ci": [ev.champion.low, ev.champion.high] if ev.champion else None,
                        "failed_seeds": list(ev.failed_seeds),
                        "offline": offline.get(ev.task),
                    },
                )
            )
