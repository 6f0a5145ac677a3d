"""The token the CLI holds: FLYWHEEL_TOKEN, or the one `flywheel login` stored for the API.

The credentials file (FLYWHEEL_CREDENTIALS_FILE, by default the user's
``~/.config/flywheel/credentials``) is JSON, one token per API URL, so a login to a staging
API does not replace the production one. It is created readable and writable by its owner
alone (0600, its folder 0700) and written through a temporary file, so a crash never leaves
half a token behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings


@dataclass(frozen=True)
class HeldToken:
    """A token and where it came from (for messages: which one to fix when it is refused)."""

    value: str
    source: str


def held_token(settings: Settings) -> HeldToken | None:
    """FLYWHEEL_TOKEN if set, else the stored login for this API, else None."""
    if settings.cli.token is not None and settings.cli.token.get_secret_value().strip():
        return HeldToken(settings.cli.token.get_secret_value().strip(), "FLYWHEEL_TOKEN")
    path = settings.cli.credentials_file
    token = _read(path).get(settings.api_url)
    if token:
        return HeldToken(token, f"the login stored in {path}")
    return None


def store_token(settings: Settings, token: str) -> Path:
    """Keep ``token`` for this API (replacing an older one); returns the file."""
    path = settings.cli.credentials_file
    tokens = _read(path)
    tokens[settings.api_url] = token
    _write(path, tokens)
    return path


def forget_token(settings: Settings) -> bool:
    """Remove this API's stored token; False when none was stored. The file goes with the
    last one."""
    path = settings.cli.credentials_file
    tokens = _read(path)
    if tokens.pop(settings.api_url, None) is None:
        return False
    if tokens:
        _write(path, tokens)
    else:
        path.unlink()
    return True


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        tokens = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not a Flywheel credentials file (not JSON): remove it and log in again"
        ) from exc
    if not isinstance(tokens, dict):
        raise ValueError(f"{path} is not a Flywheel credentials file: remove it and log in again")
    return {str(url): str(token) for url, token in tokens.items()}


def _write(path: Path, tokens: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 by open itself: the token is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(tokens, file, indent=2)
            file.write("\n")
        # The renamed file keeps its 0600, even where an older one was wider.
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
