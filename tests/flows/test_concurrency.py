"""One nightly run per fleet: simultaneous triggers, and taking over from a dead run."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from services import nights
from services.store import session_scope
from services.store.models import NightlyRun


def test_twenty_simultaneous_triggers_open_exactly_one_night(store_settings):
    def trigger(i: int) -> str:
        try:
            nights.open_night(store_settings, flow_run_id=f"trigger-{i}")
            return "opened"
        except nights.NightInProgress as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(trigger, range(20)))
    assert outcomes.count("opened") == 1
    refusals = [o for o in outcomes if o != "opened"]
    assert len(refusals) == 19 and all("is in progress" in o for o in refusals)
    with session_scope(store_settings.db_url) as session:
        [running] = session.scalars(select(NightlyRun)).all()
        assert running.state == "running" and running.pid == os.getpid()


def test_a_night_whose_process_died_is_taken_over(settings):
    child = subprocess.Popen(["true"])
    child.wait()
    late = {"late_approvals": ["candidate c0 rollout 1 started: canary stage"]}
    with session_scope(settings.db_url) as session:
        session.add(
            NightlyRun(
                state="running",
                host=os.uname().nodename,
                pid=child.pid,
                champion_before="3",
                summary=late,
            )
        )
    night = nights.open_night(settings, flow_run_id="after-crash")
    with session_scope(settings.db_url) as session:
        dead, new = session.scalars(select(NightlyRun).order_by(NightlyRun.id)).all()
        assert dead.state == "abandoned" and "took over" in dead.summary["outcome"]
        assert new.id == night and new.state == "running"
        # the same night goes on: its report starts from what the dead run had done
        assert new.champion_before == "3" and new.summary == late


def test_a_silent_run_elsewhere_blocks_until_its_lease_runs_out(settings):
    from datetime import timedelta

    from services.store.models import utcnow

    with session_scope(settings.db_url) as session:
        session.add(
            NightlyRun(
                state="running", host="other-host", pid=1, lease_until=utcnow() + timedelta(hours=1)
            )
        )
    with pytest.raises(nights.NightInProgress, match="other-host"):
        nights.open_night(settings, flow_run_id="too-early")
    with session_scope(settings.db_url) as session:
        session.scalars(select(NightlyRun)).one().lease_until = utcnow() - timedelta(seconds=1)
    nights.open_night(settings, flow_run_id="after-the-lease")


@pytest.mark.slow
def test_the_nightly_flow_reports_a_run_in_progress_and_changes_nothing(settings, prefect_harness):
    from flows.nightly import nightly

    running = nights.open_night(settings, flow_run_id="the-first-trigger")
    report = nightly()
    assert report["in_progress"] and report["outcome"].startswith(
        f"skipped: night {running} is in progress"
    )
    with session_scope(settings.db_url) as session:
        [only] = session.scalars(select(NightlyRun)).all()
        assert only.state == "running" and only.flow_run_id == "the-first-trigger"
