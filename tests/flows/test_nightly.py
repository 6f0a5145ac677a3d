"""End to end: nights of the loop on the toy task with real Prefect, Ray, MLflow and stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.store import session_scope
from services.store.models import (
    AuditEvent,
    Candidate,
    Episode,
    EvaluationEpisode,
    Intervention,
    Robot,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_jobs")]


# On SQLite; tests/test_stack.py runs the same two nights on PostgreSQL in production mode.
def test_two_nights_train_a_champion_then_a_candidate_from_the_fleets_interventions(toy_settings):
    from flows.nightly import nightly
    from flows.simulation import simulate_nights

    reports = simulate_nights(nights_to_run=2, robots=2, episodes_per_robot=4, lab_demos=6)
    first, second = reports
    # Night 0: lab demos only; the first policy becomes champion.
    assert first["candidate"]["parent"] is None and first["candidate"]["verdict"] == "pass"
    assert first["champion_after"] == first["candidate"]["version"]
    # Night 1: the fleet worked with that champion; the candidate is fine-tuned from it.
    assert second["fleet"]["episodes"] == 8
    assert second["candidate"]["parent"] == first["candidate"]["version"]
    assert second["candidate"]["n"] == 20
    # Seeded end to end (fleet seeds, training, evaluation seeds), so the outcome is known:
    # the candidate solves 7 of the 20 paired seeds against the champion's 3, better but not
    # significant at n=20 (McNemar p=0.109 > 0.05). Inconclusive is not approved, even with
    # FLYWHEEL_AUTO_APPROVE, so the champion stays version 1.
    assert (second["candidate"]["successes"], second["candidate"]["champion_successes"]) == (7, 3)
    assert second["candidate"]["verdict"] == "inconclusive"
    assert second["outcome"] == "gate inconclusive; approval awaiting"
    assert second["champion_after"] == first["candidate"]["version"]

    with session_scope(toy_settings.db_url) as session:
        robots = session.scalars(select(Robot)).all()
        assert {r.policy_version for r in robots} == {second["champion_after"]}
        evaluated = session.scalar(select(func.count()).select_from(EvaluationEpisode))
        # each model version evaluated once per seed, the champion's runs reused
        assert evaluated == 2 * 20
        actors = set(session.scalars(select(AuditEvent.actor)))
        assert "auto-approve (demo mode)" in actors
        candidates_before = session.scalar(select(func.count()).select_from(Candidate))

    # Lineage both ways: the new model back to the robots and interventions it learned from,
    # and one of those interventions forward to the model and the robots that run it.
    from services.readmodel.lineage import intervention_lineage, model_lineage

    chain = model_lineage(toy_settings, second["candidate"]["version"])["chain"]
    assert [m["model_version"] for m in chain] == [
        second["candidate"]["version"],
        first["candidate"]["version"],
    ]
    assert set(chain[0]["episodes_by_robot"]) == {"lab", "robot-00", "robot-01"}
    assert chain[0]["interventions"] > 0 and chain[1]["interventions"] == 0
    with session_scope(toy_settings.db_url) as session:
        some_intervention = session.scalars(select(Intervention.id)).first()
    forward = intervention_lineage(toy_settings, some_intervention)
    assert [m["model_version"] for m in forward["models"]] == [second["candidate"]["version"]]
    assert forward["models"][0]["rollouts"] == []  # inconclusive: never rolled out

    # Re-running the night with nothing new ingests nothing and registers no duplicate.
    # The dataset is night 2's again (not the champion's), so the night goes on with night
    # 2's candidate for it, judged as before, instead of training another.
    again = nightly()
    assert again["candidate"]["id"] == second["candidate"]["id"]
    assert again["outcome"] == "gate inconclusive; approval awaiting"
    with session_scope(toy_settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Candidate)) == candidates_before


def test_a_corrupt_upload_is_quarantined_and_the_night_goes_on(toy_settings):
    from flows.simulation import simulate_nights

    simulate_nights(nights_to_run=1, robots=1, episodes_per_robot=1, lab_demos=4)
    good = next(Path(toy_settings.fleet_log_uri).rglob("*.mcap"))
    corrupt = Path(toy_settings.fleet_log_uri) / "robot-99" / "broken.mcap"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    before = corrupt.read_bytes()

    report = simulate_nights(nights_to_run=1, robots=1, episodes_per_robot=2, lab_demos=4)[0]

    assert report["fleet"]["episodes"] == 2
    with session_scope(toy_settings.db_url) as session:
        bad = session.scalars(select(Episode).where(Episode.status == "quarantined")).one()
        assert bad.source_uri.endswith("broken.mcap") and bad.reason
    assert corrupt.read_bytes() == before


@pytest.mark.fault
def test_a_night_that_crashes_in_training_resumes_on_the_next_run(toy_settings, monkeypatch):
    # Where the train stage looks the registration up (it imports the function by name).
    import services.registry.candidates as registry
    from flows.nightly import nightly
    from flows.simulation import fleet_shift
    from services.store.models import NightlyRun

    fleet_shift.fn(toy_settings, 0, robots=1, episodes_per_robot=1, lab_demos=4)

    def registry_down(*args, **kwargs):
        raise ConnectionError("MLflow tracking server unreachable")

    working = registry.register_candidate
    monkeypatch.setattr(registry, "register_candidate", registry_down)
    with pytest.raises(ConnectionError):
        nightly()
    with session_scope(toy_settings.db_url) as session:
        crashed = session.scalars(select(NightlyRun)).one()
        assert crashed.state == "failed" and "unreachable" in crashed.summary["outcome"]
        assert crashed.dataset_id is not None  # the stages before the crash kept their output
        assert session.scalar(select(func.count()).select_from(Candidate)) == 0

    monkeypatch.setattr(registry, "register_candidate", working)  # the server is back
    report = nightly()
    assert report["candidate"]["verdict"] == "pass" and report["champion_after"] == "1"
    with session_scope(toy_settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Candidate)) == 1
        # the checkpoint trained before the crash was reused, not trained again
        assert session.scalars(select(Candidate)).one().train_seconds == 0.0
