"""Two ingests of the same source at once, as two hosts would run them: nothing twice, no
error, no orphan Parquet; on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from services.episode_store import index
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.store import session_scope
from services.store.models import Episode, utcnow
from tests.ingest.logs import recording
from tests.ingest.test_crash import assert_whole, run_ingest

GOOD = 12


@pytest.fixture
def fleet(tmp_path):
    logs = tmp_path / "logs"
    for i in range(GOOD):
        write_episode_mcap(recording(n=10 + i), logs / f"e{i:02d}.mcap")
    (logs / "bad.mcap").write_bytes(b"not a log")
    return logs


@pytest.mark.fault
@pytest.mark.slow
def test_two_hosts_ingesting_one_source_at_once_add_each_episode_once(
    store_settings, fleet, tmp_path
):
    url = store_settings.database.url
    hosts = []
    for name in ("host-a", "host-b"):  # own working folders; one index, one episode store
        (tmp_path / name).mkdir()
        hosts.append(run_ingest(store_settings.root, fleet, database_url=url, cwd=tmp_path / name))
    counts = []
    for process in hosts:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        counts.append(tuple(map(int, out.split())))
    # Each host accounts for every log once: ingested, quarantined, or skipped as indexed by
    # the other; between them each good episode is ingested once and the bad log quarantined once.
    assert [sum(c) for c in counts] == [GOOD + 1, GOOD + 1]
    assert sum(c[0] for c in counts) == GOOD and sum(c[1] for c in counts) == 1
    assert_whole(store_settings, n_good=GOOD, n_bad=1)


def test_a_writer_that_loses_the_race_skips_what_the_winner_indexed(
    store_settings, fleet, monkeypatch
):
    """The winner commits between the loser's check and its commit: a unique violation."""
    bad_digest = None
    checked = index._indexed

    def rival_commits_first(db_url, chunk):
        nonlocal bad_digest
        taken = checked(db_url, chunk)
        bad = [u for u in chunk if u.reason is not None]
        if bad and bad_digest is None:  # another host quarantined the bad log just now
            bad_digest = bad[0].digest
            with session_scope(db_url) as session:
                session.execute(
                    insert(Episode),
                    [
                        {
                            "id": bad[0].episode_id,
                            "content_hash": bad_digest,
                            "source_uri": bad[0].uri,
                            "source_format": "mcap",
                            "status": "quarantined",
                            "reason": bad[0].reason,
                            "ingested_at": utcnow(),
                        }
                    ],
                )
        return taken

    monkeypatch.setattr(index, "_indexed", rival_commits_first)
    summary = ingest_logs(store_settings, source=str(fleet))
    assert bad_digest is not None  # the race did happen
    assert (summary.ingested, summary.quarantined, summary.skipped) == (GOOD, 0, 1)
    # The data file the loser wrote before its commit failed is gone; the retry's is indexed.
    store = EpisodeStore(store_settings.episode_store)
    ok = list_episodes(store_settings, status="ok")
    assert store.data_files() == {e.data_file for e in ok}
    assert len(list_episodes(store_settings, status="quarantined")) == 1
    assert_whole(store_settings, n_good=GOOD, n_bad=1)
