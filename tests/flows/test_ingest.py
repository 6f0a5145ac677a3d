"""The ingest flow passes a retry of quarantined uploads through to the service."""

from __future__ import annotations

import pytest

from flows.stages import ingest_new_logs
from services.episode_store.index import list_episodes
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.readmodel.review import audit_log
from services.store import session_scope
from tests.ingest.logs import recording

pytestmark = pytest.mark.slow


def test_the_flow_reads_quarantined_uploads_again_only_when_asked(
    settings, prefect_harness, tmp_path
):
    logs = tmp_path / "logs"
    good = write_episode_mcap(recording(), tmp_path / "good.mcap").read_bytes()
    (logs / "robot-00").mkdir(parents=True)
    (logs / "robot-00" / "cut.mcap").write_bytes(good[: len(good) // 2])
    assert ingest_new_logs(settings, str(logs)).quarantined == 1
    [row] = list_episodes(settings, status="quarantined")

    assert ingest_new_logs(settings, str(logs)).skipped == 1
    retried = ingest_new_logs(settings, str(logs), retry_quarantined=True)

    assert (retried.quarantined, retried.skipped) == (1, 0)  # read again, still cut short
    with session_scope(settings.db_url) as session:
        actions = [h["action"] for h in audit_log(session, subject_id=row.id)]
    assert actions == ["quarantine", "retry-quarantined", "quarantine"]
