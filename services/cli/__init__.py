"""The `flywheel` command: thin over services/ and flows/. Every listing has --json."""

from services.cli import data, loop, review  # noqa: F401  (register the commands)
from services.cli.base import app


def main() -> None:
    app()


__all__ = ["app", "main"]
