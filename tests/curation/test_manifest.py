from pathlib import Path

import numpy as np
import pytest

from services.curation.manifest import (
    NoEpisodesError,
    build_manifest,
    held_out_episodes,
    is_held_out,
    read_manifest,
)
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.registry.ledger import promote
from services.store import session_scope
from services.store.models import Candidate, Dataset, DatasetEpisode, Episode
from services.training.data import load_training_data
from tests.ingest.logs import recording


def _upload(settings, name: str, **changes) -> None:
    write_episode_mcap(recording(**changes), Path(settings.fleet_log_uri) / f"{name}.mcap")
    ingest_logs(settings)


def test_the_same_episodes_give_the_same_manifest_id(store_settings):
    _upload(store_settings, "demo", kind="demo", interventions=[], n=12)
    _upload(store_settings, "deploy", n=30)
    first = build_manifest(store_settings)
    again = build_manifest(store_settings)
    assert first.id == again.id and first.created and not again.created
    with session_scope(store_settings.db_url) as session:
        assert session.get(Dataset, first.id).n_steps == 42
        links = session.query(DatasetEpisode).filter_by(dataset_id=first.id).count()
        assert links == 2
    header, table = read_manifest(store_settings, first.id)
    assert header["scheme"] == "sirius" and len(table) == 42
    assert first.class_counts["demo"] == 12 and first.class_counts["intervention"] == 4


def test_new_episodes_make_a_new_manifest_that_replays_the_old_ones(settings):
    _upload(settings, "a", n=20)
    first = build_manifest(settings)
    _upload(settings, "b", n=40)
    second = build_manifest(settings)
    assert second.id != first.id and second.n_new_episodes == 1
    assert second.replay_share == 20 / 60  # the first episode's steps are replayed


def test_training_data_carries_the_manifest_weights(settings):
    _upload(settings, "demo", kind="demo", interventions=[], n=12)
    _upload(settings, "deploy", n=30)
    dataset = build_manifest(settings, scheme="sirius")
    data = load_training_data(settings, dataset.id)
    # autonomous steps of a successful episode are kept; nothing has weight 0 here
    assert len(data) == 42 and data.states.shape == (42, 4) and data.actions.shape == (42, 2)
    assert np.isclose(data.weights.mean(), 1.0, atol=1e-5)
    assert data.tasks == ("toy-reach",) and set(data.task_index) == {0}
    uniform = load_training_data(settings, build_manifest(settings, scheme="uniform").id)
    assert np.allclose(uniform.weights, 1.0)


def test_the_memory_cap_evicts_the_least_intervened_and_never_a_demo(settings):
    _upload(settings, "demo", kind="demo", interventions=[], n=30)
    _upload(settings, "quiet", n=25, control_source=["policy"] * 25, interventions=[])
    _upload(settings, "busy", n=20)  # one takeover
    capped = build_manifest(settings, max_steps=55)
    header, _ = read_manifest(settings, capped.id)
    assert header["evicted_episodes"] == 1 and capped.n_steps == 50
    assert capped.class_counts["demo"] == 30 and capped.class_counts["intervention"] == 4
    # a cap smaller than the demos alone still keeps every demonstration
    assert build_manifest(settings, max_steps=10).class_counts["demo"] == 30


def test_held_out_episodes_never_enter_a_dataset_and_are_the_same_every_night(settings):
    held = settings.updated(curation={"holdout_share": 0.5})
    _upload(held, "demo", kind="demo", interventions=[], n=12)
    for i in range(12):
        _upload(held, f"deploy-{i}", n=20 + i)
    with session_scope(held.db_url) as session:
        episodes = session.query(Episode).all()
    expected = {e.id for e in episodes if is_held_out(e, 0.5)}
    assert 0 < len(expected) < 12  # 12 deployments at a share of one half
    assert {e.id for e in held_out_episodes(held)} == expected
    assert not any(is_held_out(e, 0.5) for e in episodes if e.kind == "demo")
    dataset = build_manifest(held)
    with session_scope(held.db_url) as session:
        used = {
            d.episode_id for d in session.query(DatasetEpisode).filter_by(dataset_id=dataset.id)
        }
    assert used == {e.id for e in episodes} - expected
    assert read_manifest(held, dataset.id)[0]["holdout_share"] == 0.5
    assert build_manifest(settings).id != dataset.id  # the share is part of the manifest


def _make_champion(settings, dataset_id: str, version: str, parent: str | None) -> None:
    with session_scope(settings.db_url, write=True) as session:
        session.add(
            Candidate(
                id=f"cand-{version}",
                model_name="flywheel-policy",
                policy="mlp",
                model_version=version,
                dataset_id=dataset_id,
                parent_version=parent,
                status="registered",
            )
        )
        promote(
            session=session,
            expected=parent,
            new=version,
            candidate_id=f"cand-{version}",
            actor="test",
            reason="test",
        )


def _episodes_of(settings, dataset_id: str) -> set[str]:
    with session_scope(settings.db_url) as session:
        rows = session.query(DatasetEpisode).filter_by(dataset_id=dataset_id)
        return {d.episode_id for d in rows}


def test_a_replay_share_keeps_new_episodes_and_only_that_share_of_what_the_champion_saw(
    settings,
):
    _upload(settings, "demo", kind="demo", interventions=[], n=30)
    _upload(settings, "night-1", n=30)
    first = build_manifest(settings, replay=0.0)  # no champion yet: everything is new
    assert first.n_episodes == 2
    _make_champion(settings, first.id, "1", None)
    _upload(settings, "night-2", n=40)
    second = build_manifest(settings, replay=0.0)
    assert second.n_episodes == 1 and second.n_steps == 40  # night 2 alone
    _make_champion(settings, second.id, "2", "1")
    _upload(settings, "night-3", n=30, policy_version="2")  # v2 ran night 3 (not night 1 again)
    # v2 carries what v1 learnt: nights 1 and 2 and the demo are all seen, night 3 is new
    half = build_manifest(settings, replay=0.5)
    assert half.n_steps <= 60 and half.n_episodes == 2  # 30 new + one seen of <= 30 steps
    assert read_manifest(settings, half.id)[0]["replay"] == 0.5
    everything = build_manifest(settings)
    assert everything.n_episodes == 4 and "replay" not in read_manifest(settings, everything.id)[0]
    assert _episodes_of(settings, half.id) < _episodes_of(settings, everything.id)


def test_no_replay_and_nothing_new_is_a_clear_error(settings):
    _upload(settings, "night-1", n=30)
    first = build_manifest(settings)
    _make_champion(settings, first.id, "1", None)
    with pytest.raises(NoEpisodesError, match="not been trained on"):
        build_manifest(settings, replay=0.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        build_manifest(settings, replay=1.0)


def test_class_shares_apply_within_each_task_so_a_quiet_task_keeps_its_share(settings):
    # task A: takeovers in every episode; task B: clean autonomous successes only (each from
    # its own robot: the same numbers from one robot would be one episode uploaded twice)
    for i in range(4):
        _upload(settings, f"a-{i}", n=40, robot_id=f"robot-a{i}")
    quiet = ["policy"] * 20
    for i in range(2):
        _upload(
            settings,
            f"b-{i}",
            n=20,
            task="toy-push",
            control_source=quiet,
            interventions=[],
            robot_id=f"robot-b{i}",
        )
    dataset = build_manifest(settings, scheme="sirius")
    data = load_training_data(settings, dataset.id)
    b = data.task_index == data.tasks.index("toy-push")
    # B keeps the share of the loss its steps have (40 of 200), not what is left after A's
    # interventions take half of everything
    assert np.isclose(data.weights[b].sum(), 40, rtol=1e-5)
    assert np.isclose(data.weights.mean(), 1.0, atol=1e-5)
    # within A, the interventions (4 of every 40 steps) carry about half of A's weight
    a_interventions = ~b & (data.weights > 2)
    assert np.isclose(data.weights[a_interventions].sum() / data.weights[~b].sum(), 0.5, atol=0.01)
