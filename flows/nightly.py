"""The nightly flow: the loop of DESIGN.md, one stage after the other.

The flow takes its configuration as a parameter: the settings its caller resolved, or, when a
scheduled deployment runs it with none, the environment's, read once at the start. Either way
they are checked against the registries, recorded as the run's ``nightly-settings`` artifact
(secrets masked) and handed to every stage, so a run shows the configuration it ran with.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.stages import (
    build_dataset,
    evaluate_candidate,
    ingest_new_logs,
    judge_on_field_evidence,
    request_approval,
    roll_out,
    roll_out_late_approvals,
    shadow_candidate,
    train_candidate,
    waiting_shadow_task,
)
from services import nights
from services.config import Settings, get_settings
from services.notify.courier import notify_in_background
from services.rollout.champion import reconcile_champion
from services.run_settings import check_registered
from services.shadow.judging import needs_field_evidence

# The key of the artifact each nightly run records its settings under.
SETTINGS_ARTIFACT = "nightly-settings"


@task(name="resolve-settings", cache_policy=NO_CACHE)
def resolve_settings(settings: Settings | None) -> Settings:
    """The run's settings (the environment's when none were given), checked and recorded."""
    settings = check_registered(settings or get_settings())
    create_markdown_artifact(
        key=SETTINGS_ARTIFACT,
        markdown=f"```json\n{settings.model_dump_json(indent=2)}\n```",
        description="The settings this nightly run ran with (secrets masked).",
    )
    return settings


@task(name="open-night", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def open_night(settings: Settings) -> tuple[int | None, str | None]:
    """Tonight's night id, or (None, why) when another nightly run is in progress."""
    try:
        night = nights.open_night(settings, flow_run_id=flow_run.get_id())
    except nights.NightInProgress as exc:
        return None, str(exc)
    # A crash between a promotion and the MLflow alias move is repaired before anything else.
    reconcile_champion(settings)
    return night, None


# No retries, nothing to wait for: it starts a daemon thread and returns (services/notify).
@task(name="notify-in-background", cache_policy=NO_CACHE)
def start_notifier(settings: Settings) -> None:
    """Tell the webhook of tonight's verdicts, approvals waiting and quarantine spikes while
    the night goes on, without ever holding it up."""
    notify_in_background(settings)


@task(name="record-night", cache_policy=NO_CACHE)
def record_night(settings: Settings, night_id: int, **fields) -> None:
    nights.update_night(settings, night_id, **fields)


@task(name="champion-dataset", cache_policy=NO_CACHE)
def champion_dataset(settings: Settings) -> str | None:
    return nights.champion_dataset(settings)


@task(name="ingest-run-of-night", cache_policy=NO_CACHE)
def ingest_run_of(settings: Settings, night_id: int) -> str | None:
    return nights.ingest_run_of(settings, night_id)


@task(name="rolled-out-candidate", cache_policy=NO_CACHE)
def rolled_out_candidate(settings: Settings, night_id: int, dataset_id: str) -> str | None:
    return nights.rolled_out_candidate(settings, night_id, dataset_id)


@task(name="rollout-under-way", cache_policy=NO_CACHE)
def rollout_under_way(settings: Settings) -> str | None:
    return nights.rollout_under_way(settings)


@task(name="night-started", cache_policy=NO_CACHE)
def night_started(settings: Settings, night_id: int):
    return nights.started_at(settings, night_id)


@task(name="needs-field-evidence", cache_policy=NO_CACHE)
def needs_field_evidence_task(settings: Settings, candidate_id: str) -> bool:
    return needs_field_evidence(settings, candidate_id)


@task(name="close-night", cache_policy=NO_CACHE)
def close_night(settings: Settings, night_id: int, outcome: str) -> dict:
    nights.update_night(settings, night_id, state="completed", summary={"outcome": outcome})
    return nights.night_summary(settings, night_id)


def _mark_failed(flow, run, state) -> None:
    # A hook gets the run's recorded parameters, whose secrets are masked: the store's URL
    # comes from the environment, which the run's own settings were resolved from.
    nights.fail_night(get_settings(), flow_run_id=str(run.id), error=str(state.message))


@flow(name="nightly-flywheel", on_failure=[_mark_failed], on_crashed=[_mark_failed])
def nightly(settings: Settings | None = None, source: str | None = None) -> dict:
    """One night of the loop with ``settings`` (None: the environment's, read now)."""
    settings = resolve_settings(settings)
    night, busy = open_night(settings)
    if night is None:
        return {"outcome": f"skipped: {busy}", "in_progress": True}
    start_notifier(settings)
    # A candidate approved after an earlier night stopped waiting goes out first, so that
    # tonight's candidate is trained from, and judged against, the champion the fleet runs.
    late = roll_out_late_approvals(settings)
    if late:
        record_night(settings, night, summary={"late_approvals": late})
    # A night that took over from a dead run goes on with that run's ingest run and candidate.
    batch = ingest_new_logs(settings, source, run_id=ingest_run_of(settings, night))
    record_night(settings, night, ingest_run_id=batch.run_id)
    dataset = build_dataset(settings)
    record_night(settings, night, dataset_id=dataset.id)
    # A candidate shadowed on the last shift is judged on its field evidence before anything
    # new is trained (services/shadow/judging.py).
    shadow = waiting_shadow_task(settings)
    if shadow is not None:
        candidate_id = shadow.candidate_id
        record_night(settings, night, candidate_id=candidate_id)
        verdict, waits = judge_on_field_evidence(settings, shadow, night_started(settings, night))
        if verdict is None:
            return close_night(settings, night, waits)
    else:
        candidate_id = rolled_out_candidate(settings, night, dataset.id)
        if candidate_id is None:
            if dataset.id == champion_dataset(settings):
                return close_night(
                    settings, night, "no new episodes since the champion was trained"
                )
            candidate_id = train_candidate(settings, dataset.id).id
            record_night(settings, night, candidate_id=candidate_id)
        if needs_field_evidence_task(settings, candidate_id):
            shadow_candidate(settings, candidate_id)
            return close_night(
                settings,
                night,
                f"shadowing: candidate {candidate_id} runs beside the champion on the next "
                "shift; its field evidence is judged the night after",
            )
        _, verdict = evaluate_candidate(settings, candidate_id)
    approval = request_approval(settings, candidate_id)
    if approval.status != "approved":
        return close_night(settings, night, f"gate {verdict.verdict}; approval {approval.status}")
    busy = rollout_under_way(settings)
    if busy is not None:  # a later night's late approvals start it once that one ends
        return close_night(
            settings,
            night,
            f"gate {verdict.verdict}; approved by {approval.actor}; rollout waits: {busy}",
        )
    rollout = roll_out(settings, candidate_id)
    stage = rollout.stages[rollout.current_stage]["name"]
    started = "champion on the whole fleet" if rollout.state == "completed" else f"{stage} stage"
    return close_night(
        settings, night, f"gate {verdict.verdict}; approved by {approval.actor}; rollout: {started}"
    )
