"""Candidates in the registry: an id that only what defines the candidate changes, and a
registration that leaves the model version, the candidate row and its audit entry."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.registry.candidates import candidate_id_for, candidate_summary, record_candidate
from services.store import session_scope
from services.store.models import AuditEvent, Dataset
from services.training.config import TrainConfig


def test_a_candidates_id_depends_on_what_is_trained_not_on_how_the_run_goes():
    plain = candidate_id_for("d1", "3", TrainConfig().identity(), "abc")
    # Pinned: a changed id would make every night retrain a candidate it already has.
    assert plain == "ea50a21b84d0feaf"
    assert candidate_id_for("d1", "3", TrainConfig(resume=True).identity(), "abc") == plain
    assert candidate_id_for("d1", "3", TrainConfig(overwrite=True).identity(), "abc") == plain
    for other in (
        candidate_id_for("d2", "3", TrainConfig().identity(), "abc"),
        candidate_id_for("d1", None, TrainConfig().identity(), "abc"),
        candidate_id_for("d1", "3", TrainConfig(steps=10).identity(), "abc"),
        candidate_id_for("d1", "3", TrainConfig().identity(), "def"),
    ):
        assert other != plain


@pytest.mark.slow
def test_a_recorded_candidate_is_registered_in_mlflow_and_the_store(settings, toy_checkpoint):
    with session_scope(settings.db_url) as session:
        session.add(Dataset(id="d1", scheme="sirius", n_episodes=1, n_steps=1, path="x"))
    summary = record_candidate(
        settings,
        candidate_id="c1",
        dataset_id="d1",
        parent_version=None,
        policy="mlp",
        checkpoint_dir=toy_checkpoint,
        params={"lr": 0.001},
        losses=[(1, 0.5), (2, 0.25)],
        final_loss=0.25,
        train_seconds=3.0,
        code_version="abc",
        flow_run_id="flow-1",
    )
    assert summary.model_version == "1" and summary.trained and summary.final_loss == 0.25
    assert candidate_summary(settings, "c1") == summary
    with session_scope(settings.db_url) as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "c1")).one()
        assert audit.action == "register-candidate" and audit.after["model_version"] == "1"
    with pytest.raises(LookupError, match="unknown candidate c2"):
        candidate_summary(settings, "c2")
