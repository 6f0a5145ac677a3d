"""The `flywheel` command: thin over services/ and flows/. Every listing has --json."""

from cli import account, data, deletion, loop, review, robots  # noqa: F401  (register the commands)
from cli.base import app


def main() -> None:
    app()


__all__ = ["app", "main"]
