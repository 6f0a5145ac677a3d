"""`flywheel episodes delete` and `flywheel retention apply` as a user runs them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from services.approval.users import add_user
from services.episode_store.index import list_episodes
from services.store import session_scope
from tests.curation.seeded import seed, store_files

runner = CliRunner()


@pytest.fixture
def home(settings, tmp_path, monkeypatch):
    with session_scope(settings.db_url) as session:
        token = add_user(session=session, name="fatima", role="admin")
        engineer = add_user(session=session, name="erik", role="engineer")
    monkeypatch.setenv("FLYWHEEL_TOKEN", token)
    home = seed(settings, tmp_path / "logs")
    home.engineer_token = engineer
    return home


def test_only_an_admin_deletes_episodes(settings, home, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TOKEN", home.engineer_token)
    result = runner.invoke(
        app, ["episodes", "delete", "--robot", "robot-00", "--reason", "owner asked"]
    )
    assert result.exit_code != 0
    assert "erik is an engineer: only an admin may delete episodes" in result.output
    assert len(list_episodes(settings)) == 5


def test_delete_prints_the_datasets_and_models_that_used_the_episodes(settings, home):
    dry = runner.invoke(
        app,
        ["episodes", "delete", "--robot", "robot-00", "--reason", "owner asked", "--dry-run"],
        terminal_width=200,
    )
    assert dry.exit_code == 0, dry.output
    assert "would delete 2 episodes (robot-00: 2)" in dry.output
    assert len(list_episodes(settings)) == 5

    done = runner.invoke(
        app,
        ["episodes", "delete", "--robot", "robot-00", "--reason", "owner asked"],
        terminal_width=200,
    )

    assert done.exit_code == 0, done.output
    assert "deleted 2 episodes (robot-00: 2); reason: owner asked" in done.output
    assert "now marked no longer reproducible" in done.output and home.dataset in done.output
    assert "version 1 (candidate cand-1, deployed, champion)" in done.output
    assert "version 2 (candidate cand-2, registered) via version 1" in done.output
    assert "tombstones left" in done.output
    listed = json.loads(runner.invoke(app, ["episodes", "--status", "ok", "--json"]).output)
    assert {e["robot_id"] for e in listed} == {"robot-01"}


def test_delete_by_ids_and_time_as_json(settings, home):
    first, second = sorted(home.of_robot("robot-01"))
    result = runner.invoke(
        app,
        [
            "episodes",
            "delete",
            "--ids",
            f"{first}, {second}",
            "--since",
            "2026-01-05",
            "--until",
            "2026-01-11T00:00+00:00",
            "--reason",
            "asked",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert sorted(report["episode_ids"]) == [first, second]
    assert report["datasets"] == [home.dataset] and report["actor"] == "fatima"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reason", "x"], "choose what to delete"),
        (["--robot", "robot-00"], "Missing option '--reason'"),
        (["--ids", "feedfacefeedface", "--reason", "x"], "no episode with id feedfacefeedface"),
        (["--since", "2026-02-01", "--until", "2026-01-01", "--reason", "x"], "is not before"),
        (["--since", "last tuesday", "--reason", "x"], "is not an ISO 8601 date"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_deletes_nothing(settings, home, args, message):
    files = store_files(settings)
    result = runner.invoke(app, ["episodes", "delete", *args], terminal_width=200)
    assert result.exit_code != 0
    assert message in result.output
    assert store_files(settings) == files and len(list_episodes(settings)) == 5


def test_retention_apply_says_when_it_is_off_and_what_it_removes(settings, home, monkeypatch):
    off = runner.invoke(app, ["retention", "apply"])
    assert off.exit_code == 0 and "retention is off" in off.output

    monkeypatch.setenv("FLYWHEEL_RETENTION_EPISODE_DAYS", "1")  # every seeded episode is older
    dry = runner.invoke(app, ["retention", "apply", "--dry-run"], terminal_width=200)
    assert dry.exit_code == 0, dry.output
    assert "kept 4 the champion's lineage was trained on" in dry.output
    assert len(list_episodes(settings)) == 5
