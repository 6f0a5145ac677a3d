"""The local Ray head: on a machine that has never run Ray (no ``~/.ray/auth_token`` yet), and
its temp folder, whose socket paths must fit."""

from __future__ import annotations

from pathlib import Path

from services.runtime.ray_head import ensure_auth_token, start_head, stop_head, temp_dir_for


def test_a_head_starts_where_no_token_exists_and_makes_one(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    head = start_head(tmp_path / "ray", tmp_path / "head.log", env={"HOME": str(home)})
    try:
        token = home / ".ray" / "auth_token"
        assert token.exists() and token.read_text().strip()
    finally:
        stop_head(head.pid, timeout_s=5)


def test_a_token_named_in_the_environment_is_used_as_it_is(tmp_path):
    ensure_auth_token({"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")})
    assert not (tmp_path / ".ray").exists()


def test_a_long_home_gets_a_short_ray_folder_whose_socket_paths_fit():
    session = "session_2026-12-02_06-13-32_531400_3109299/sockets/plasma_store"
    for folder in (Path("/tmp/h"), Path("/tmp/benchwork/full/sirius-no-replay-s0/ray/head")):
        assert len(f"{temp_dir_for(folder)}/{session}".encode()) <= 107
    assert temp_dir_for(Path("/tmp/h")) == Path("/tmp/h")
