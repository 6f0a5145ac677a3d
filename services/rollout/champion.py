"""The champion's followers: the MLflow ``champion`` alias and the cluster's policy servers
move after the ledger (``ledger.py``) commits, and are repaired here if a crash fell between
the two writes."""

from __future__ import annotations

from services.config import Settings
from services.registry.ledger import champion_of
from services.registry.mlflow_registry import champion_version, set_champion
from services.rollout.kube_sync import sync_policy_servers
from services.store import session_scope


def reconcile_champion(settings: Settings) -> bool:
    """Move the MLflow alias to the ledger's champion if they differ, and the cluster's policy
    servers (when Flywheel runs on Kubernetes) to their groups' versions; True if the
    alias moved."""
    with session_scope(settings.db_url) as session:
        ledger = champion_of(session=session)
    sync_policy_servers(settings)
    if ledger is None or champion_version(settings) == ledger:
        return False
    set_champion(settings, ledger)
    return True
