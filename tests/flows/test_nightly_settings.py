"""A nightly run takes its settings as a parameter and records the ones it ran with."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.nightly import SETTINGS_ARTIFACT, nightly
from services import nights

pytestmark = pytest.mark.slow


def _recorded(flow_run_id) -> tuple[dict, dict]:
    """The run's settings artifact and its ``settings`` parameter, as Prefect keeps them."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SETTINGS_ARTIFACT]))
        )
        [artifact] = [a for a in artifacts if a.flow_run_id == flow_run_id]
        parameters = client.read_flow_run(flow_run_id).parameters
    text = artifact.data.removeprefix("```json\n").removesuffix("\n```")
    return json.loads(text), parameters


def test_a_scheduled_run_records_the_settings_it_read_from_the_environment(
    settings, prefect_harness, monkeypatch
):
    monkeypatch.setenv("FLYWHEEL_SCHEME", "iwr")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_STAGES", "[0.5, 1.0]")
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", "a-real-secret")
    monkeypatch.setenv("FLYWHEEL_NOTIFY_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")
    nights.open_night(settings, flow_run_id="another-run")  # the night ends right after
    state = nightly(return_state=True)
    assert state.result()["in_progress"]
    recorded, parameters = _recorded(state.state_details.flow_run_id)
    assert parameters["settings"] is None  # as a deployment's schedule runs it
    assert recorded["curation"]["scheme"] == "iwr" and recorded["rollout"]["stages"] == [0.5, 1.0]
    assert recorded["home"] == str(settings.home) and recorded["secret_key"] == "**********"
    assert recorded["notify"]["webhook_url"] == "**********"  # it lets anyone post to the channel


def test_settings_given_to_the_run_are_its_parameter_and_its_record(settings, prefect_harness):
    nights.open_night(settings, flow_run_id="another-run")
    given = settings.updated(curation={"scheme": "uniform"}, training={"train_steps": 7})
    state = nightly(given, return_state=True)
    assert state.result()["in_progress"]
    recorded, parameters = _recorded(state.state_details.flow_run_id)
    assert recorded == parameters["settings"] == json.loads(given.model_dump_json())
    assert recorded["curation"]["scheme"] == "uniform" and recorded["training"]["train_steps"] == 7


def test_an_unknown_scheme_fails_the_run_before_any_stage(settings, prefect_harness):
    wrong = settings.updated(curation={"scheme": "hg_dagger"})
    with pytest.raises(ValueError, match="did you mean 'hg-dagger'"):
        nightly(wrong)
    assert nights.nights_completed(settings) == 0
