"""The rollback drill: a deliberately worse candidate reaches the canary, the fleet's
heartbeats show it, and the controller rolls it back on its own.

The worse model is the champion with its output layer zeroed (the robot does not move, so
the operator keeps taking over). It would never pass the gate; the drill approves it as
"rollout drill" to exercise the last line of defence, and the audit log says so.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from policies.checkpoint import load_checkpoint, save_checkpoint
from services.config import Settings
from services.registry.ledger import champion_of
from services.registry.mlflow_registry import code_version, policy_checkpoint, register_candidate
from services.store import record_audit, session_scope
from services.store.models import Candidate, Decision

DRILL_ACTOR = "rollout drill"


def register_worse_candidate(settings: Settings) -> str:
    """Register the sabotaged champion as an approved candidate; returns its id."""
    with session_scope(settings.db_url) as session:
        champion = champion_of(session=session)
        if champion is None:
            raise RuntimeError("the drill needs a champion: run `flywheel nightly` first")
        parent = session.query(Candidate).filter_by(model_version=champion).one()
        dataset_id = parent.dataset_id
    candidate_id = "drill-" + hashlib.sha256(f"worse-than/{champion}".encode()).hexdigest()[:12]
    policy = load_checkpoint(policy_checkpoint(settings, champion))
    last = [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    workdir = settings.root / "drills" / candidate_id
    shutil.rmtree(workdir, ignore_errors=True)
    checkpoint = save_checkpoint(
        Path(workdir) / "checkpoint",
        policy.model,
        policy.config,
        policy.stats,
        {**policy.meta, "drill": f"champion {champion} with its output layer zeroed"},
    )
    registered = register_candidate(
        settings,
        checkpoint_dir=checkpoint,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_version=champion,
        flow_run_id=None,
        code_version=code_version(),
        params={"drill": "zeroed output layer"},
        losses=[],
        manifest_path=None,
    )
    with session_scope(settings.db_url, write=True) as session:
        if session.get(Candidate, candidate_id) is None:
            session.add(
                Candidate(
                    id=candidate_id,
                    model_name=settings.registry.model_name,
                    model_version=registered.version,
                    dataset_id=dataset_id,
                    parent_version=champion,
                    policy=parent.policy,
                    mlflow_run_id=registered.run_id,
                    code_version=code_version(),
                    status="approved",
                )
            )
            reason = "drill: approved without the gate to test automatic rollback"
            session.add(
                Decision(
                    candidate_id=candidate_id,
                    kind="approval",
                    verdict="approved",
                    actor=DRILL_ACTOR,
                    reason=reason,
                )
            )
            record_audit(
                session,
                actor=DRILL_ACTOR,
                action="approve",
                subject_type="candidate",
                subject_id=candidate_id,
                before=None,
                after={"status": "approved", "model_version": registered.version},
                reason=reason,
            )
    return candidate_id
