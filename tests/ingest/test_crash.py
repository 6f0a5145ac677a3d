"""Crash safety: an ingest SIGKILLed anywhere, then run again, ends as a clean run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.logs import recording

ROOT = Path(__file__).resolve().parents[2]

# The child runs one ingest in chunks of two episodes and kills itself, with SIGKILL (no
# cleanup, no finally), at the named point.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from services.config import Settings, configure_runtime
    from services.store import migrate
    from services.episode_store import parquet
    from services.ingest import batch, sources

    point, source = sys.argv[1], sys.argv[2]
    batch.CHUNK_EPISODES = 2
    calls = {}

    def die_on(owner, name, nth, before):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            if before and calls[name] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if not before and calls[name] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, wrapper)

    def rename_then_die(path, write):  # a data file written under its temp name, not renamed
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path.with_name(f".{path.name}.partial"))
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "while-hashing":
        die_on(sources.Source, "sha256", 3, before=True)
    elif point == "mid-parquet-write":
        original_write_atomic = parquet._write_atomic
        parquet._write_atomic = lambda path, write: (
            rename_then_die(path, write) if path.name.startswith("file-")
            else original_write_atomic(path, write)
        )
    elif point == "after-data-file":
        die_on(parquet.EpisodeStore, "write_batch", 2, before=False)
    elif point == "after-index-commit":
        die_on(parquet.EpisodeStore, "write_meta", 2, before=True)
    elif point != "none":
        raise SystemExit(f"unknown point {point}")
    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    summary = batch.ingest_logs(settings, source=source)
    print(summary.ingested, summary.quarantined, summary.skipped)
    """
)

POINTS = ["while-hashing", "mid-parquet-write", "after-data-file", "after-index-commit"]


def run_ingest(
    home: Path,
    source: Path,
    point: str = "none",
    *,
    database_url: str | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen:
    """An ingest in a process of its own: ``cwd`` and ``database_url`` as another host's."""
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_MODE"):
        env.pop(key, None)
    if database_url:
        env["FLYWHEEL_DATABASE_URL"] = database_url
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, point, str(source)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def fleet(tmp_path) -> Path:
    logs = tmp_path / "logs"
    for i in range(5):
        write_episode_mcap(recording(n=10 + i), logs / f"e{i}.mcap")
    (logs / "bad.mcap").write_bytes(b"not a log")
    return logs


def assert_whole(settings, n_good: int, n_bad: int) -> None:
    """Every good episode exactly once in index and store; no orphans; meta counts them."""
    ok = list_episodes(settings, status="ok")
    assert len(ok) == n_good and len(list_episodes(settings, status="quarantined")) == n_bad
    store = EpisodeStore(settings.episode_store)
    referenced = {e.data_file for e in ok}
    assert store.data_files() == referenced and store.orphan_files(referenced) == set()
    assert not list(store.root.rglob("*.partial"))
    rows = Counter()
    for data_file in store.data_files():
        rows.update(
            pq.read_table(store.root / data_file, columns=["episode_id"])["episode_id"].to_pylist()
        )
    assert rows == {e.id: e.steps for e in ok}  # each episode's frames once, in one file
    info = json.loads((store.root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (n_good, sum(e.steps for e in ok))
    assert sorted(e.episode_index for e in ok) == list(range(n_good))


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_an_ingest_killed_anywhere_and_run_again_ends_whole(settings, fleet, point):
    before = {p: p.read_bytes() for p in fleet.rglob("*")}
    killed = run_ingest(settings.root, fleet, point)
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -9, err  # it did die at the point
    rerun = run_ingest(settings.root, fleet)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert_whole(settings, n_good=5, n_bad=1)
    assert before == {p: p.read_bytes() for p in fleet.rglob("*")}
