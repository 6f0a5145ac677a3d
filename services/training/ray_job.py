"""The train stage as a Ray job, submitted through Ray's job submission API to a Ray address.

``settings.runtime.ray_job_address`` names the cluster's job API (a KubeRay cluster's
dashboard, or the head of `flywheel up`); unset, Flywheel starts a local head for the job and
stops it after.
The job's entrypoint is this module: it joins the cluster it runs on and runs Ray Train for
one candidate (services/training/job.py), which reads the dataset from FLYWHEEL_HOME and
publishes the final checkpoint there, so the job and the submitter share FLYWHEEL_HOME (one
machine, or a shared volume); the submitter then registers the candidate.

A job is named after its candidate (``train-<candidate id>``, then ``-2``, ``-3`` for later
attempts): a submitter that died and runs again waits for the job still running instead of
starting another, and a new attempt resumes the candidate's Ray Train run (same run name).
The job's log is kept in FLYWHEEL_HOME/ray/jobs/<job>.log as it arrives.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import asdict
from pathlib import Path

from services.config import Settings, configure_runtime, get_settings
from services.runtime.ray_head import local_head
from services.training.config import TrainConfig
from services.training.data import load_training_data
from services.training.job import TrainResult, fit_candidate, published
from services.training.scaling import check_scaling, scaling_env

ENTRYPOINT = "python -m services.training.ray_job"


class TrainingJobFailed(RuntimeError):
    """A candidate's training job (a Ray job, or a KubeRay RayJob) ended without success."""


def train(
    settings: Settings,
    *,
    candidate_id: str,
    dataset_id: str,
    parent_checkpoint: Path | None,
    config: TrainConfig,
) -> TrainResult:
    """Train the candidate where the settings say; returns its published checkpoint."""
    final = settings.checkpoints_dir / candidate_id
    if final.exists() and not config.overwrite:
        return published(final)
    check_scaling(settings, config.batch_size)
    args = dict(
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_checkpoint=parent_checkpoint,
        config=config,
    )
    if settings.runtime.ray_job_address:
        return run_job(settings, settings.runtime.ray_job_address, **args)
    if settings.runtime.ray_address:
        # This process already is a Ray job's driver (a KubeRay RayJob runs `flywheel train`
        # on its own cluster): it trains here rather than submit a job from inside a job.
        return _train_here(settings, **args)
    with local_head(settings.ray_dir) as head:
        return run_job(settings, head.job_address, **args)


def run_job(
    settings: Settings,
    job_address: str,
    *,
    candidate_id: str,
    dataset_id: str,
    parent_checkpoint: Path | None,
    config: TrainConfig,
    poll_s: float = 2.0,
    timeout_s: float = 6 * 3600,
) -> TrainResult:
    """Submit (or find) the candidate's training job, follow its log, wait for its end."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    started = time.perf_counter()
    try:
        client = JobSubmissionClient(job_address)
        jobs = {job.submission_id: job for job in client.list_jobs()}
    except Exception as exc:
        raise TrainingJobFailed(
            f"cannot reach the Ray job API at {job_address}: {exc} "
            "(check FLYWHEEL_RAY_JOB_ADDRESS, or unset it to start a local Ray head)"
        ) from exc
    job_id = _job_id(jobs, candidate_id)
    if job_id in jobs and config.overwrite:  # still running: stop it and start over
        client.stop_job(job_id)
        _wait(client, job_id, poll_s, timeout_s, lambda: None)
        jobs = {job.submission_id: job for job in client.list_jobs()}
        job_id = _job_id(jobs, candidate_id)
    if job_id not in jobs:
        entrypoint = " ".join(
            [
                ENTRYPOINT,
                f"--candidate {shlex.quote(candidate_id)}",
                f"--dataset {shlex.quote(dataset_id)}",
                f"--config {shlex.quote(json.dumps(asdict(config)))}",
                *([f"--parent {shlex.quote(str(parent_checkpoint))}"] if parent_checkpoint else []),
            ]
        )
        _submit(
            client,
            poll_s=poll_s,
            entrypoint=entrypoint,
            submission_id=job_id,
            runtime_env={
                "env_vars": {"FLYWHEEL_HOME": str(settings.root), **scaling_env(settings.training)}
            },
            metadata={"candidate": candidate_id, "dataset": dataset_id},
        )
    log = settings.ray_dir / "jobs" / f"{job_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    def keep_log() -> None:
        log.write_text(client.get_job_logs(job_id))

    status = _wait(client, job_id, poll_s, timeout_s, keep_log)
    keep_log()
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        raise TrainingJobFailed(
            f"Ray job {job_id} (candidate {candidate_id}) at {job_address} ended {status.value}: "
            f"{_last_error(log.read_text(errors='replace')) or info.message} (its log: {log})"
        )
    final = settings.checkpoints_dir / candidate_id
    if not (final / "meta.json").exists():
        raise TrainingJobFailed(
            f"Ray job {job_id} succeeded but published no checkpoint at {final}: "
            "does the Ray cluster share FLYWHEEL_HOME with this process?"
        )
    return published(final, time.perf_counter() - started)


# A head's job API answers before its node's agent has registered to run jobs; on a busy
# machine that takes a while, and the API says so with this message.
AGENT_NOT_READY = "No available agent to submit job"


def _submit(client, *, poll_s: float, agent_wait_s: float = 120.0, **job) -> None:
    """Submit the job, waiting up to ``agent_wait_s`` for the head's job agent to come up."""
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            client.submit_job(**job)
            return
        except RuntimeError as exc:
            if AGENT_NOT_READY not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


def _job_id(jobs: dict, candidate_id: str) -> str:
    """The candidate's job still running, or the name of its next attempt."""
    base = f"train-{candidate_id}"
    attempts = [base] + [f"{base}-{n}" for n in range(2, len(jobs) + 2)]
    for job_id in attempts:
        if job_id not in jobs or not jobs[job_id].status.is_terminal():
            return job_id
    raise AssertionError("unreachable: more attempts than jobs")


def _wait(client, job_id: str, poll_s: float, timeout_s: float, on_poll):
    deadline = time.monotonic() + timeout_s
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            raise TrainingJobFailed(f"Ray job {job_id} did not finish in {timeout_s:.0f} s")
        on_poll()
        time.sleep(poll_s)
    return status


def _last_error(log: str) -> str:
    """The exception a failed entrypoint ended with: the last line naming an error."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line]
    return errors[-1] if errors else (lines[-1] if lines else "")


def _train_here(settings: Settings, *, candidate_id, dataset_id, parent_checkpoint, config):
    return fit_candidate(
        settings,
        load_training_data(settings, dataset_id, config.cameras),
        candidate_id=candidate_id,
        parent_checkpoint=parent_checkpoint,
        config=config,
    )


def main(argv: list[str] | None = None) -> None:
    """The job's entrypoint: join the cluster the job runs on and train the candidate."""
    import ray

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--parent", default=None, help="the parent's checkpoint folder")
    args = parser.parse_args(argv)
    config = TrainConfig.from_dict(json.loads(args.config))
    settings = get_settings()
    configure_runtime(settings)
    ray.init(log_to_driver=False, configure_logging=False)  # the job's cluster (RAY_ADDRESS)
    result = _train_here(
        settings,
        candidate_id=args.candidate,
        dataset_id=args.dataset,
        parent_checkpoint=Path(args.parent) if args.parent else None,
        config=config,
    )
    print(
        f"candidate {args.candidate}: checkpoint {result.checkpoint_dir}, loss {result.final_loss}"
    )


if __name__ == "__main__":
    main()
