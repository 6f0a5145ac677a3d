"""The local Ray head on a machine that has never run Ray: no ``~/.ray/auth_token`` yet."""

from __future__ import annotations

from services.runtime.ray_head import ensure_auth_token, start_head, stop_head


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
