"""One Prefect flow per stage of the loop, each a thin adapter over a plain service function.

Retries sit on the tasks with side effects; every side effect is keyed by content (file
hashes, manifest hashes, candidate ids), so a retried or re-run task finds its earlier work
instead of repeating it. Each takes the run's settings as its first parameter (the nightly
flow resolves them once), so every run records the configuration it ran with.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.progress import FLOW_HOOKS
from services.approval.late import roll_out_approved
from services.approval.requests import wait_for_decision
from services.config import Settings
from services.curation.manifest import build_manifest
from services.evaluation.gate import judge_candidate, record_verdict
from services.evaluation.paired import evaluate_against_champion
from services.ingest.batch import ingest_logs
from services.registry.candidates import candidate_summary
from services.rollout.controller import start_rollout
from services.rollout.kube_sync import kube_backend
from services.shadow.judging import (
    close_shadow,
    judge_shadow,
    shadow_candidate_tonight,
    waiting_shadow,
)
from services.training.config import TrainConfig
from services.training.kube_job import train_on_kubernetes
from services.training.stage import train_and_register


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def ingest_task(
    settings: Settings, source: str | None, run_id: str | None, retry_quarantined: bool = False
):
    return ingest_logs(settings, source=source, run_id=run_id, retry_quarantined=retry_quarantined)


@task(name="build-dataset", retries=1, retry_delay_seconds=[5], cache_policy=NO_CACHE)
def build_dataset_task(settings: Settings):
    return build_manifest(
        settings,
        scheme=settings.curation.scheme,
        max_steps=settings.curation.dataset_max_steps,
        replay=settings.curation.replay_share,
    )


@task(name="train-candidate", retries=1, retry_delay_seconds=[10], cache_policy=NO_CACHE)
def train_task(settings: Settings, dataset_id: str, flow_run_id: str | None):
    if settings.kube.kube_namespace is not None:  # on Kubernetes: a KubeRay RayJob does the work
        candidate_id = train_on_kubernetes(settings, dataset_id, backend=kube_backend(settings))
        return candidate_summary(settings, candidate_id)
    # resume: a retried or re-run night continues its candidate's interrupted Ray run.
    config = TrainConfig.from_settings(settings.training, resume=True)
    return train_and_register(
        settings, dataset_id=dataset_id, config=config, flow_run_id=flow_run_id
    )


@task(name="evaluate-candidate", cache_policy=NO_CACHE)
def evaluate_task(settings: Settings, candidate_id: str):
    return evaluate_against_champion(settings, candidate_id)


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(settings: Settings, candidate_id: str, evaluations):
    return record_verdict(
        settings.db_url, candidate_id, judge_candidate(settings.db_url, candidate_id, evaluations)
    )


@task(name="start-shadow", cache_policy=NO_CACHE)
def start_shadow_task(settings: Settings, candidate_id: str):
    return shadow_candidate_tonight(settings, candidate_id, actor="nightly")


@task(name="waiting-shadow", cache_policy=NO_CACHE)
def waiting_shadow_task(settings: Settings):
    return waiting_shadow(settings, actor="nightly")


@task(name="field-gate", cache_policy=NO_CACHE)
def field_gate_task(settings: Settings, run, evaluations, night_started):
    verdict, why = judge_shadow(
        settings, run, evaluations, night_started=night_started, actor="nightly"
    )
    if verdict is None:
        return None, why
    stored = record_verdict(settings.db_url, run.candidate_id, verdict)
    close_shadow(settings, run, stored, actor="nightly")
    return stored, why


@task(name="wait-for-approval", cache_policy=NO_CACHE)
def approval_task(settings: Settings, candidate_id: str):
    return wait_for_decision(settings, candidate_id)


@task(name="roll-out-late-approvals", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def late_approvals_task(settings: Settings) -> list[str]:
    return roll_out_approved(settings, actor="nightly")


@task(name="rollout", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def rollout_task(settings: Settings, candidate_id: str):
    return start_rollout(settings, candidate_id, actor="nightly")


@flow(name="ingest-logs", **FLOW_HOOKS)
def ingest_new_logs(
    settings: Settings,
    source: str | None = None,
    run_id: str | None = None,
    retry_quarantined: bool = False,
):
    """``run_id``: an ingest run to continue (a dead nightly run's); None starts a new one.
    ``retry_quarantined``: read quarantined uploads again (after their fleet's fix)."""
    return ingest_task(settings, source, run_id, retry_quarantined)


@flow(name="build-dataset", **FLOW_HOOKS)
def build_dataset(settings: Settings):
    return build_dataset_task(settings)


@flow(name="train-candidate", **FLOW_HOOKS)
def train_candidate(settings: Settings, dataset_id: str):
    return train_task(settings, dataset_id, flow_run.get_id())


@flow(name="evaluate-candidate", **FLOW_HOOKS)
def evaluate_candidate(settings: Settings, candidate_id: str):
    evaluations = evaluate_task(settings, candidate_id)
    return evaluations, gate_task(settings, candidate_id, evaluations)


@flow(name="shadow-candidate", **FLOW_HOOKS)
def shadow_candidate(settings: Settings, candidate_id: str):
    """A candidate with field tasks: evaluate what a twin can now, shadow it on the next shift."""
    evaluations = evaluate_task(settings, candidate_id)
    return evaluations, start_shadow_task(settings, candidate_id)


@flow(name="judge-on-field-evidence", **FLOW_HOOKS)
def judge_on_field_evidence(settings: Settings, run, night_started):
    """The shadowed candidate's verdict: closed loop on the twin tasks (the stored episodes
    of its first night, reused), field evidence on the others; (None, why) while it waits."""
    evaluations = evaluate_task(settings, run.candidate_id)
    return field_gate_task(settings, run, evaluations, night_started)


@flow(name="approve-candidate", **FLOW_HOOKS)
def request_approval(settings: Settings, candidate_id: str):
    return approval_task(settings, candidate_id)


@flow(name="roll-out", **FLOW_HOOKS)
def roll_out(settings: Settings, candidate_id: str):
    return rollout_task(settings, candidate_id)


@flow(name="roll-out-late-approvals", **FLOW_HOOKS)
def roll_out_late_approvals(settings: Settings):
    return late_approvals_task(settings)
