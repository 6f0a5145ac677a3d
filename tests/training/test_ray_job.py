"""The train stage as a real Ray job: a local head that Flywheel starts and stops, a job
submitted through Ray's job submission API, and the candidate registered at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.curation.manifest import build_manifest
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.registry.candidates import candidate_id_for
from services.registry.mlflow_registry import code_version
from services.runtime.ray_head import temp_dir_for
from services.training.config import TrainConfig
from services.training.ray_job import TrainingJobFailed, _submit
from services.training.stage import train_and_register
from tests.ingest.logs import recording

pytestmark = pytest.mark.slow

CONFIG = TrainConfig(steps=200, checkpoint_every=100, log_every=50, hidden=(32, 32))


def _dataset(settings) -> str:
    logs = Path(settings.fleet_log_uri)
    write_episode_mcap(recording(kind="demo", interventions=[], n=40), logs / "demo.mcap")
    write_episode_mcap(recording(n=60), logs / "deploy.mcap")
    ingest_logs(settings)
    return build_manifest(settings).id


def _head_processes(settings) -> list[int]:
    """Processes still running out of the local head's temp folder."""
    marker = str(temp_dir_for(settings.ray_dir / "head")).encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_the_train_stage_submits_a_ray_job_to_a_head_it_starts_and_stops(settings):
    dataset_id = _dataset(settings)
    summary = train_and_register(settings, dataset_id=dataset_id, config=CONFIG)
    assert summary.trained and summary.model_version == "1" and summary.final_loss is not None
    # the job's log is kept under FLYWHEEL_HOME, named after the candidate
    log = settings.ray_dir / "jobs" / f"train-{summary.id}.log"
    assert f"candidate {summary.id}: checkpoint" in log.read_text()
    # the Ray Train run is the candidate's, and the checkpoint was published for the registry
    assert (settings.root / "ray_results" / f"candidate-{summary.id}").is_dir()
    assert (settings.checkpoints_dir / summary.id / "meta.json").exists()
    # the head is gone: no pid file, nothing left running from its folder
    assert not (settings.ray_dir / "head.pid").exists()
    assert _head_processes(settings) == []
    # a re-run finds the registered candidate and starts no head
    again = train_and_register(settings, dataset_id=dataset_id, config=CONFIG)
    assert not again.trained and again.model_version == "1"
    assert list((settings.ray_dir / "jobs").iterdir()) == [log]


def test_a_failed_job_fails_the_stage_with_the_jobs_own_error(settings):
    dataset_id = _dataset(settings)
    candidate_id = candidate_id_for(dataset_id, None, CONFIG.identity(), code_version())
    # an interrupted run of this candidate, neither resumed nor overwritten: the job refuses
    (settings.root / "ray_results" / f"candidate-{candidate_id}").mkdir(parents=True)
    with pytest.raises(TrainingJobFailed, match="ended FAILED: RuntimeError: an interrupted"):
        train_and_register(settings, dataset_id=dataset_id, config=CONFIG)
    assert _head_processes(settings) == []


class _Client:
    """A job API whose agent comes up after ``not_ready`` refusals."""

    def __init__(self, not_ready: int, error: str = "") -> None:
        self.not_ready, self.error, self.submitted = not_ready, error, []

    def submit_job(self, **job) -> None:
        if self.error:
            raise RuntimeError(self.error)
        if self.not_ready:
            self.not_ready -= 1
            raise RuntimeError(
                "Request failed with status code 500: No available agent to "
                "submit job, please try again later.."
            )
        self.submitted.append(job)


def test_a_submission_waits_for_the_heads_job_agent_and_other_errors_fail_at_once():
    client = _Client(not_ready=2)
    _submit(client, poll_s=0, entrypoint="python -V", submission_id="train-x")
    assert client.submitted == [{"entrypoint": "python -V", "submission_id": "train-x"}]
    with pytest.raises(RuntimeError, match="No available agent"):
        _submit(_Client(not_ready=99), poll_s=0, agent_wait_s=0, entrypoint="python -V")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        _submit(_Client(error="bad runtime_env", not_ready=0), poll_s=0, entrypoint="python -V")
