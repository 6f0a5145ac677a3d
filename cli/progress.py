"""Which stage of a long command is running, and for how long.

Drawn on stderr, so that under --json stdout carries the JSON document alone. The stages are
the flows' own (flows/progress.py reports them as they start and end); a command that calls a
service directly names its one stage with ``Stages.stage``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)


class Stages:
    """A live list of the stages run so far, each with its elapsed time; a listener for
    ``flows.progress.listening``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._progress = Progress(
            SpinnerColumn(finished_text="[dim]-"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=stderr,
        )
        self._running: dict[str, TaskID] = {}

    def __call__(self, stage: str, event: str) -> None:
        if event == "started":
            if stage not in self._running:  # a retry starts the same stage again
                self._running[stage] = self._progress.add_task(self.prefix + stage, total=1)
            return
        task = self._running.pop(stage, None)
        if task is None:
            return
        mark = "[green]done" if event == "completed" else f"[red]{event}"
        self._progress.update(task, description=f"{self.prefix}{stage} {mark}", completed=1)
        self._progress.stop_task(task)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """One stage run here rather than reported by a flow."""
        self(name, "started")
        try:
            yield
        except BaseException:
            self(name, "failed")
            raise
        self(name, "completed")

    def __enter__(self) -> Stages:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for stage in list(self._running):  # a stage that never reported its end
            self(stage, "failed" if error else "completed")
        self._progress.stop()
