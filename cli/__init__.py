"""The `flywheel` command: thin over services/ and flows/. Every listing has --json."""

from cli import data, loop, review, robots  # noqa: F401  (register the commands)
from cli.base import app


def main() -> None:
    app()


__all__ = ["app", "main"]
