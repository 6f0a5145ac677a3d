"""The `flywheel` command as a user runs it: listings in JSON, clear errors, role checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from services.approval.requests import open_approval_request
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.conftest import add_candidate
from tests.ingest.logs import recording
from tests.notify.receiver import Receiver

runner = CliRunner()


def test_ingest_then_list_episodes_as_json(settings):
    logs = Path(settings.fleet_log_uri)
    write_episode_mcap(recording(), logs / "robot-00" / "a.mcap")
    (logs / "robot-00" / "broken.mcap").write_bytes(b"garbage")
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    assert "ingested 1, skipped 0, quarantined 1" in result.output
    listed = json.loads(
        runner.invoke(app, ["episodes", "--status", "quarantined", "--json"]).output
    )
    assert [e["reason"] for e in listed] == ["not an MCAP file (bad magic bytes)"]
    ok = json.loads(runner.invoke(app, ["episodes", "--status", "ok", "--json"]).output)
    assert ok[0]["steps"] == 20 and ok[0]["n_interventions"] == 1


def test_bad_arguments_get_a_clear_message(settings):
    result = runner.invoke(app, ["episodes", "--status", "weird"])
    assert result.exit_code == 1 and "must be ok, quarantined or duplicate" in result.output
    result = runner.invoke(app, ["dataset", "build"])
    assert result.exit_code == 1 and "run `flywheel ingest` first" in result.output
    result = runner.invoke(app, ["dataset", "build", "--scheme", "sirus"])
    assert result.exit_code == 1
    result = runner.invoke(app, ["lineage"])
    assert result.exit_code == 1 and "exactly one of" in result.output
    result = runner.invoke(app, ["evaluate", "42"])
    assert result.exit_code == 1 and "no candidate" in result.output


def test_an_unknown_scheme_in_the_environment_stops_every_command(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SCHEME", "sirus")
    result = runner.invoke(app, ["episodes"])
    assert result.exit_code == 1 and "FLYWHEEL_SCHEME" in result.output
    assert "did you mean 'sirius'" in result.output


def _token(output: str) -> str:
    return re.search(r"\(shown once\): (fw_\S+)", output).group(1)


def test_only_a_fleet_manager_approves_from_the_cli(settings, monkeypatch):
    """Embedded mode: the CLI acts as the holder of a token, on the local store."""
    add_candidate(settings.db_url, "c1", version="7", status="passed")
    added = runner.invoke(app, ["users", "add", "erin", "--role", "engineer"])
    assert added.exit_code == 0 and "API token (shown once): fw_" in added.output
    erin = _token(added.output)
    fatima = _token(
        runner.invoke(app, ["users", "add", "fatima", "--role", "fleet-manager"]).output
    )
    assert runner.invoke(app, ["users", "add", "bob", "--role", "pilot"]).exit_code == 1

    nobody = runner.invoke(app, ["approve", "7", "--reason", "looks good"])
    assert nobody.exit_code == 1 and "no API token" in nobody.output
    monkeypatch.setenv("FLYWHEEL_TOKEN", erin)
    refused = runner.invoke(app, ["approve", "7", "--reason", "looks good"])
    assert refused.exit_code == 1 and "only a fleet manager" in refused.output
    monkeypatch.setenv("FLYWHEEL_TOKEN", "fw_not-a-token")
    wrong = runner.invoke(app, ["approve", "7", "--reason", "x"])
    assert wrong.exit_code == 1 and "invalid or revoked API token" in wrong.output
    monkeypatch.setenv("FLYWHEEL_TOKEN", fatima)
    approved = runner.invoke(app, ["approve", "7", "--reason", "canary is clean"])
    assert approved.exit_code == 0 and "approved candidate 7 as fatima" in approved.output
    listed = json.loads(runner.invoke(app, ["candidates", "--json"]).output)
    assert listed[0]["status"] == "approved" and listed[0]["approved_by"] == "fatima"

    monkeypatch.setenv("FLYWHEEL_TOKEN", erin)
    assert runner.invoke(app, ["comment", "7", "--text", "watch push"]).exit_code == 0
    detail = json.loads(runner.invoke(app, ["candidate", "7", "--json"]).output)
    assert [(d["actor"], d["verdict"]) for d in detail["decisions"]] == [
        ("fatima", "approved"),
        ("erin", "comment"),
    ]
    audit = json.loads(runner.invoke(app, ["audit", "--subject", "c1", "--json"]).output)
    assert [a["action"] for a in audit] == ["comment", "approve"]
    assert audit[1]["before"] == {"status": "passed"} and audit[1]["reason"] == "canary is clean"
    missing = runner.invoke(app, ["candidate", "99"])
    assert missing.exit_code == 1 and "no candidate" in missing.output


def test_flywheel_user_names_nobody(settings, monkeypatch):
    """The old way to act as someone is refused, even next to a valid token."""
    add_candidate(settings.db_url, "c1", version="7", status="passed")
    fatima = _token(
        runner.invoke(app, ["users", "add", "fatima", "--role", "fleet-manager"]).output
    )
    monkeypatch.setenv("FLYWHEEL_USER", "fatima")
    for token in (None, fatima):
        if token:
            monkeypatch.setenv("FLYWHEEL_TOKEN", token)
        refused = runner.invoke(app, ["approve", "7", "--reason", "x"])
        assert refused.exit_code == 1 and "FLYWHEEL_USER is no longer honoured" in refused.output
    listed = json.loads(runner.invoke(app, ["candidates", "--json"]).output)
    assert listed[0]["status"] == "passed" and listed[0]["approved_by"] is None


def test_with_no_token_the_operator_administers_users_and_a_token_holder_must_be_an_admin(
    settings, monkeypatch
):
    erin = _token(runner.invoke(app, ["users", "add", "erin", "--role", "engineer"]).output)
    ada = _token(runner.invoke(app, ["users", "add", "ada", "--role", "admin"]).output)
    monkeypatch.setenv("FLYWHEEL_TOKEN", erin)
    refused = runner.invoke(app, ["users", "add", "eve", "--role", "admin"])
    assert refused.exit_code == 1 and "only an admin manages users" in refused.output
    assert runner.invoke(app, ["users", "token", "ada"]).exit_code == 1
    monkeypatch.setenv("FLYWHEEL_TOKEN", ada)
    assert runner.invoke(app, ["users", "add", "fatima", "--role", "fleet-manager"]).exit_code == 0
    audit = json.loads(runner.invoke(app, ["audit", "--json"]).output)
    assert [(a["actor"], a["subject_id"]) for a in audit if a["action"] == "add-user"] == [
        ("ada", "fatima"),
        ("admin (local CLI)", "ada"),
        ("admin (local CLI)", "erin"),
    ]
    assert [
        u["name"] for u in json.loads(runner.invoke(app, ["users", "list", "--json"]).output)
    ] == [
        "ada",
        "erin",
        "fatima",
    ]


def test_notify_delivers_what_is_owed_and_says_so(settings, monkeypatch):
    result = runner.invoke(app, ["notify"])
    assert result.exit_code == 1 and "FLYWHEEL_NOTIFY_WEBHOOK_URL" in result.output
    with Receiver() as receiver:
        monkeypatch.setenv("FLYWHEEL_NOTIFY_WEBHOOK_URL", receiver.url)
        assert runner.invoke(app, ["notify"]).exit_code == 0  # the first pass starts the log
        add_candidate(settings.db_url, "c1", version="7", status="passed")
        assert open_approval_request(settings, "c1").status == "awaiting"
        result = runner.invoke(app, ["notify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "delivered_now": 1,
        "failed_attempts": 0,
        "pending": 0,
        "delivered": 1,
        "failed": 0,
    }
    assert [b["event"] for b in receiver.bodies] == ["approval-waiting"]
