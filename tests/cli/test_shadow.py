"""Shadow runs and the field gate's thresholds from the CLI: a fleet manager's, through the
API in production, refused for anyone else; the report of a candidate with its shadow run."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_people import _invoke, _token, production  # noqa: F401 (fixture)
from tests.conftest import add_candidate


@pytest.mark.postgres
def test_a_fleet_manager_sets_thresholds_and_runs_a_shadow_through_the_api(
    production,  # noqa: F811
    monkeypatch,
):
    def run(*args, token=None):
        return _invoke(*args, token=token, monkeypatch=monkeypatch)

    ada = _token(run("users", "add", "ada", "--role", "admin").output)
    fatima = _token(run("users", "add", "fatima", "--role", "fleet-manager", token=ada).output)
    erin = _token(run("users", "add", "erin", "--role", "engineer", token=ada).output)
    add_candidate(production.db_url, "c1", version="7", status="registered", parent="6")

    assert "no thresholds set" in run("field-gate", "show").output
    refused = run("field-gate", "set", "--reason", "r", token=erin)
    assert refused.exit_code == 1 and "only a fleet manager may set the field gate" in (
        refused.output
    )
    bad = run("field-gate", "set", "--reason", "r", "--min-episodes", "1", token=fatima)
    assert bad.exit_code == 1 and "min_episodes" in bad.output
    done = run("field-gate", "set", "--reason", "pilot site", "--min-episodes", "30", token=fatima)
    assert done.exit_code == 0 and "version 1 set by fatima" in done.output
    shown = json.loads(run("field-gate", "show", "--json").output)
    assert shown["current"]["thresholds"]["min_episodes"] == 30
    assert shown["current"]["set_by"] == "fatima"

    assert run("shadow", "start", "7", "--reason", "r", token=erin).exit_code == 1
    started = run("shadow", "start", "7", "--reason", "before the canary", token=fatima)
    assert started.exit_code == 0 and "model 7 beside 6" in started.output
    report = json.loads(run("shadow", "report", "7", "--json").output)
    assert (report["state"], report["judged"], report["tasks"]) == ("running", False, {})
    unknown = run("shadow", "report", "99")
    assert unknown.exit_code == 1 and "no candidate with model version or id '99'" in unknown.output
    assert run("shadow", "stop", "--reason", "done", token=fatima).exit_code == 0
    again = run("shadow", "stop", "--reason", "done", token=fatima)
    assert again.exit_code == 1 and "no shadow run is under way" in again.output

    agreement = run("field-gate", "agreement")
    assert "no candidate with both kinds of evidence on a task yet" in agreement.output
    audit = json.loads(run("audit", "--json").output)
    assert [(a["actor"], a["action"]) for a in audit[:3]] == [
        ("fatima", "shadow_end"),
        ("fatima", "shadow_start"),
        ("fatima", "field_gate_thresholds"),
    ]
