"""The nightly flow: the loop of DESIGN.md, one stage after the other."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.stages import (
    build_dataset,
    evaluate_candidate,
    ingest_new_logs,
    request_approval,
    roll_out,
    roll_out_late_approvals,
    train_candidate,
)
from services import nights
from services.config import get_settings


@task(name="open-night", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def open_night() -> tuple[int | None, str | None]:
    """Tonight's night id, or (None, why) when another nightly run is in progress."""
    from services.rollout.champion import reconcile_champion

    settings = get_settings()
    try:
        night = nights.open_night(settings, flow_run_id=flow_run.get_id())
    except nights.NightInProgress as exc:
        return None, str(exc)
    # A crash between a promotion and the MLflow alias move is repaired before anything else.
    reconcile_champion(settings)
    return night, None


@task(name="record-night", cache_policy=NO_CACHE)
def record_night(night_id: int, **fields) -> None:
    nights.update_night(get_settings(), night_id, **fields)


@task(name="champion-dataset", cache_policy=NO_CACHE)
def champion_dataset() -> str | None:
    return nights.champion_dataset(get_settings())


@task(name="ingest-run-of-night", cache_policy=NO_CACHE)
def ingest_run_of(night_id: int) -> str | None:
    return nights.ingest_run_of(get_settings(), night_id)


@task(name="rolled-out-candidate", cache_policy=NO_CACHE)
def rolled_out_candidate(night_id: int, dataset_id: str) -> str | None:
    return nights.rolled_out_candidate(get_settings(), night_id, dataset_id)


@task(name="close-night", cache_policy=NO_CACHE)
def close_night(night_id: int, outcome: str) -> dict:
    settings = get_settings()
    nights.update_night(settings, night_id, state="completed", summary={"outcome": outcome})
    return nights.night_summary(settings, night_id)


def _mark_failed(flow, run, state) -> None:
    nights.fail_night(get_settings(), flow_run_id=str(run.id), error=str(state.message))


@flow(name="nightly-flywheel", on_failure=[_mark_failed], on_crashed=[_mark_failed])
def nightly(scheme: str | None = None, source: str | None = None) -> dict:
    """One night of the loop; ``scheme`` overrides the weighting setting (FLYWHEEL_SCHEME)."""
    night, busy = open_night()
    if night is None:
        return {"outcome": f"skipped: {busy}", "in_progress": True}
    # A candidate approved after an earlier night stopped waiting goes out first, so that
    # tonight's candidate is trained from, and judged against, the champion the fleet runs.
    late = roll_out_late_approvals()
    if late:
        record_night(night, summary={"late_approvals": late})
    # A night that took over from a dead run goes on with that run's ingest run and candidate.
    batch = ingest_new_logs(source, run_id=ingest_run_of(night))
    record_night(night, ingest_run_id=batch.run_id)
    dataset = build_dataset(scheme)
    record_night(night, dataset_id=dataset.id)
    candidate_id = rolled_out_candidate(night, dataset.id)
    if candidate_id is None:
        if dataset.id == champion_dataset():
            return close_night(night, "no new episodes since the champion was trained")
        candidate_id = train_candidate(dataset.id).id
        record_night(night, candidate_id=candidate_id)
    _, verdict = evaluate_candidate(candidate_id)
    approval = request_approval(candidate_id)
    if approval.status != "approved":
        return close_night(night, f"gate {verdict.verdict}; approval {approval.status}")
    rollout = roll_out(candidate_id)
    stage = rollout.stages[rollout.current_stage]["name"]
    started = "champion on the whole fleet" if rollout.state == "completed" else f"{stage} stage"
    return close_night(
        night, f"gate {verdict.verdict}; approved by {approval.actor}; rollout: {started}"
    )
