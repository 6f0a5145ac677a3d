"""People's actions from the CLI: as the holder of a token, through the API in production.

Production runs against the real API on a socket (PostgreSQL, a real secret key); embedded
mode against the local store. `flywheel login` keeps the token in a 0600 file.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from services.api.server import api_in_background
from services.config import get_settings
from tests.conftest import _settings, add_candidate

runner = CliRunner()


def _token(output: str) -> str:
    return re.search(r"\(shown once\): (fw_\S+)", output).group(1)


def _invoke(*args: str, token: str | None = None, monkeypatch=None, **kwargs):
    if monkeypatch is not None:
        if token is None:
            monkeypatch.delenv("FLYWHEEL_TOKEN", raising=False)
        else:
            monkeypatch.setenv("FLYWHEEL_TOKEN", token)
    return runner.invoke(app, list(args), **kwargs)


def _status(version: str) -> tuple[str, str | None]:
    [c] = [
        c
        for c in json.loads(runner.invoke(app, ["candidates", "--json"]).output)
        if c["model_version"] == version
    ]
    return c["status"], c["approved_by"]


@pytest.fixture
def production(postgres_url, tmp_path, monkeypatch):
    """Production mode on a fresh PostgreSQL database with the API serving it."""
    settings = _settings(tmp_path, monkeypatch, postgres_url)
    monkeypatch.setenv("FLYWHEEL_MODE", "production")
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", "a-real-secret-for-this-test")
    with api_in_background() as url:
        monkeypatch.setenv("FLYWHEEL_API_URL", url)
        yield settings


@pytest.mark.postgres
def test_production_acts_through_the_api_as_the_tokens_holder(production, monkeypatch):
    def run(*args, token=None, **kwargs):
        return _invoke(*args, token=token, monkeypatch=monkeypatch, **kwargs)

    # The bootstrap: with no token, only the first admin, and only once.
    ada = _token(run("users", "add", "ada", "--role", "admin").output)
    again = run("users", "add", "eve", "--role", "admin")
    assert again.exit_code == 1 and "ada already administer" in again.output
    refused = run("users", "add", "fatima", "--role", "fleet-manager")
    assert refused.exit_code == 1 and "no API token" in refused.output
    fatima = _token(run("users", "add", "fatima", "--role", "fleet-manager", token=ada).output)
    erin = _token(run("users", "add", "erin", "--role", "engineer", token=ada).output)
    add_candidate(production.db_url, "c1", version="7", status="passed")

    nobody = run("approve", "7", "--reason", "lgtm")
    assert nobody.exit_code == 1 and "no API token: log in with `flywheel login`" in nobody.output
    wrong = run("approve", "7", "--reason", "lgtm", token="fw_not-a-token")
    assert wrong.exit_code == 1 and "invalid or revoked API token (from FLYWHEEL_TOKEN)" in (
        wrong.output
    )
    engineer = run("approve", "7", "--reason", "lgtm", token=erin)
    assert engineer.exit_code == 1 and "only a fleet manager" in engineer.output
    monkeypatch.setenv("FLYWHEEL_USER", "fatima")
    named = run("approve", "7", "--reason", "lgtm", token=erin)
    assert named.exit_code == 1 and "FLYWHEEL_USER is no longer honoured" in named.output
    monkeypatch.delenv("FLYWHEEL_USER")
    assert _status("7") == ("passed", None)  # none of the refusals changed anything

    approved = run("approve", "7", "--reason", "canary is clean", token=fatima)
    assert approved.exit_code == 0, approved.output
    assert "approved candidate 7 as fatima" in approved.output
    assert run("comment", "7", "--text", "watch push", token=erin).exit_code == 0
    assert _status("7") == ("approved", "fatima")
    audit = json.loads(run("audit", "--json").output)
    assert [(a["actor"], a["action"], a["subject_id"]) for a in audit] == [
        ("erin", "comment", "c1"),
        ("fatima", "approve", "c1"),
        ("ada", "add-user", "erin"),
        ("ada", "add-user", "fatima"),
        ("admin (local CLI)", "add-user", "ada"),
    ]

    # Rollouts: the API's answers, with the role checks and conflicts it reports.
    start = run("rollout", "start", "7", token=erin)
    assert start.exit_code == 1 and "only a fleet manager may start a rollout" in start.output
    add_candidate(production.db_url, "c2", version="8", status="approved", parent="5")
    stale = run("rollout", "start", "8", token=fatima)
    assert stale.exit_code == 1 and "evaluated against 5" in stale.output
    halt = run("rollout", "halt", "--reason", "worried", token=fatima)
    assert halt.exit_code == 1 and "nothing to halt" in halt.output
    back = run("rollout", "rollback", "--reason", "worried", token=fatima)
    assert back.exit_code == 1 and "nothing to roll back" in back.output
    assert run("rollout", "rollback", "--reason", "x", token=erin).exit_code == 1


@pytest.mark.postgres
def test_production_manages_robot_credentials_through_the_api_as_an_admin(production, monkeypatch):
    def run(*args, token=None):
        result = _invoke(*args, token=token, monkeypatch=monkeypatch)
        return result.exit_code, " ".join(result.output.split())  # unwrapped

    ada = _token(run("users", "add", "ada", "--role", "admin")[1])
    erin = _token(run("users", "add", "erin", "--role", "engineer", token=ada)[1])
    code, said = run("robots", "enroll", "robot-07")
    assert code == 1 and "in production only an admin manages robot credentials" in said
    code, said = run("robots", "enroll", "robot-07", token=erin)
    assert code == 1 and "only an admin may enroll robots" in said

    code, said = run("robots", "enroll", "robot-07", "--task", "pick-place", token=ada)
    assert code == 0, said
    first = re.search(r"\(shown once\): (fwr_\S+)", said).group(1)
    code, said = run("robots", "enroll", "robot-07", token=ada)
    assert code == 1 and "is already enrolled" in said
    code, said = run("robots", "rotate", "robot-07", token=ada)
    assert code == 0 and "fwr_" in said and first not in said, said
    assert run("robots", "revoke", "robot-07", token=ada)[0] == 0
    audit = json.loads(runner.invoke(app, ["audit", "--subject", "robot-07", "--json"]).output)
    assert [(a["actor"], a["action"]) for a in audit if a["actor"] == "ada"] == [
        ("ada", "revoke-robot-credential"),
        ("ada", "rotate-robot-credential"),
        ("ada", "enroll-robot"),
    ]


@pytest.mark.postgres
def test_production_login_checks_the_token_with_the_api_and_keeps_it_private(production, tmp_path):
    ada = _token(_invoke("users", "add", "ada", "--role", "admin").output)
    refused = runner.invoke(app, ["login", "--token-stdin"], input="fw_not-a-token\n")
    assert refused.exit_code == 1 and "invalid or revoked API token" in refused.output
    credentials = tmp_path / "config" / "flywheel" / "credentials"
    assert not credentials.exists()

    logged_in = runner.invoke(app, ["login", "--token-stdin"], input=f"{ada}\n")
    assert logged_in.exit_code == 0 and "as ada (admin)" in logged_in.output
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    assert json.loads(credentials.read_text()) == {get_settings().api_url: ada}
    whoami = json.loads(runner.invoke(app, ["whoami", "--json"]).output)
    assert whoami["name"] == "ada" and whoami["token_from"].startswith("the login stored")
    fatima = runner.invoke(app, ["users", "add", "fatima", "--role", "fleet-manager"])
    assert fatima.exit_code == 0  # as the stored login's holder, through the API

    assert "logged out" in runner.invoke(app, ["logout"]).output
    assert not credentials.exists()
    assert "no API token" in runner.invoke(app, ["whoami"]).output


@pytest.mark.postgres
def test_production_refuses_when_the_api_cannot_be_reached(production, monkeypatch):
    """People's actions never fall back to the database in production."""
    ada = _token(_invoke("users", "add", "ada", "--role", "admin").output)
    add_candidate(production.db_url, "c1", version="7", status="passed")
    monkeypatch.setenv("FLYWHEEL_API_URL", "http://127.0.0.1:9")  # discard: nothing listens
    down = _invoke("approve", "7", "--reason", "x", token=ada, monkeypatch=monkeypatch)
    assert down.exit_code == 1 and "cannot reach the Flywheel API at http://127.0.0.1:9" in (
        down.output
    )
    assert _status("7") == ("passed", None)


def test_embedded_login_whoami_and_logout(settings, tmp_path, monkeypatch):
    fatima = _token(
        runner.invoke(app, ["users", "add", "fatima", "--role", "fleet-manager"]).output
    )
    erin = _token(runner.invoke(app, ["users", "add", "erin", "--role", "engineer"]).output)
    add_candidate(settings.db_url, "c1", version="7", status="passed")
    assert runner.invoke(app, ["login", "--token-stdin"], input="fw_nope\n").exit_code == 1
    logged_in = runner.invoke(app, ["login", "--token-stdin"], input=f"{fatima}\n")
    assert logged_in.exit_code == 0 and "as fatima (fleet-manager)" in logged_in.output
    credentials = Path(tmp_path / "config" / "flywheel" / "credentials")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert "fatima (fleet-manager)" in runner.invoke(app, ["whoami"]).output

    monkeypatch.setenv("FLYWHEEL_TOKEN", erin)  # the environment's token comes first
    assert "erin (engineer), token from FLYWHEEL_TOKEN" in runner.invoke(app, ["whoami"]).output
    monkeypatch.delenv("FLYWHEEL_TOKEN")
    approved = runner.invoke(app, ["approve", "7", "--reason", "canary is clean"])
    assert approved.exit_code == 0 and "as fatima" in approved.output

    assert "logged out" in runner.invoke(app, ["logout"]).output
    assert not credentials.exists()
    assert "no stored login" in runner.invoke(app, ["logout"]).output
    refused = runner.invoke(app, ["reject", "7", "--reason", "changed my mind"])
    assert refused.exit_code == 1 and "no API token" in refused.output


def test_a_damaged_credentials_file_is_named_not_trusted(settings, tmp_path):
    credentials = tmp_path / "config" / "flywheel" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text("not json")
    refused = runner.invoke(app, ["approve", "7", "--reason", "x"])
    assert refused.exit_code == 1 and "not a Flywheel credentials file" in refused.output
