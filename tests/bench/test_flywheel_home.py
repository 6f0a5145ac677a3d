"""The benchmark's shared night 0: an arm's home is a copy of its seed's lab home."""

from __future__ import annotations

import sqlite3

import pytest

from bench.flywheel import copy_home, settle_home


def make_home(home):
    (home / "mlartifacts" / "m1").mkdir(parents=True)
    (home / "ray" / "head").mkdir(parents=True)
    (home / "mlartifacts" / "m1" / "MLmodel").write_text(
        f"artifact_path: file://{home}/mlartifacts/m1\nflavors: {{}}\n"
    )
    with sqlite3.connect(home / "flywheel.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE datasets (id TEXT, path VARCHAR(512), n_steps INTEGER)")
        db.execute("INSERT INTO datasets VALUES ('d1', ?, 800)", (f"{home}/datasets/d1",))
        db.execute("INSERT INTO datasets VALUES ('d2', '/elsewhere/d2', 10)")
    return db  # still open, as a worker's engine may leave it: the rows are in the WAL


def test_the_copy_points_at_itself_and_the_lab_home_is_untouched(tmp_path):
    lab, arm = tmp_path / "lab-s0", tmp_path / "sirius-s0"
    still_open = make_home(lab)
    assert (lab / "flywheel.db-wal").stat().st_size
    with pytest.raises(RuntimeError, match="settle first"):
        copy_home(lab, arm)
    settle_home(lab)
    copy_home(lab, arm)
    still_open.close()

    with sqlite3.connect(arm / "flywheel.db") as db:
        rows = db.execute("SELECT id, path, n_steps FROM datasets ORDER BY id").fetchall()
    db.close()
    assert rows == [("d1", f"{arm}/datasets/d1", 800), ("d2", "/elsewhere/d2", 10)]
    assert (
        (arm / "mlartifacts" / "m1" / "MLmodel")
        .read_text()
        .startswith(f"artifact_path: file://{arm}/mlartifacts/m1\n")
    )
    assert not (arm / "ray").exists()  # each worker starts a Ray head of its own
    with sqlite3.connect(lab / "flywheel.db") as db:
        assert (
            db.execute("SELECT path FROM datasets WHERE id='d1'")
            .fetchone()[0]
            .startswith(f"{lab}/")
        )
    db.close()


def test_a_binary_file_that_holds_the_old_path_is_an_error_not_a_corrupt_copy(tmp_path):
    lab = tmp_path / "lab-s0"
    make_home(lab).close()
    (lab / "blob.bin").write_bytes(b"\xff\xfe" + str(lab).encode())
    with pytest.raises(RuntimeError, match="neither SQLite nor text"):
        copy_home(lab, tmp_path / "arm")
