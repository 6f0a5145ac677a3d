"""The `flywheel` command: thin over services/ and flows/. Every listing has --json."""

from cli import (  # noqa: F401  (register the commands)
    account,
    data,
    deletion,
    loop,
    policy_server,
    review,
    robots,
    shadow,
)
from cli.base import app


def main() -> None:
    app()


__all__ = ["app", "main"]
