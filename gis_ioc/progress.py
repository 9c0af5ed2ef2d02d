"""A progress bar for long commands (loads, tile exports): rich, on a terminal only, imported only when shown."""

from __future__ import annotations

from typing import Any

SHOWN_FROM = 20_000  # units of work (rows, tiles): below this a command is over before a bar would help


class Bar:
    """Call it with (done, total); it shows a bar on the console's terminal past ``SHOWN_FROM``; ``close`` ends it."""

    def __init__(self, label: str, console: Any = None) -> None:
        self.label = label
        self.console = console  # a rich Console (standard error when None, made when first needed)
        self.progress: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        if total < SHOWN_FROM:
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.console = self.console or Console(stderr=True)
            if not self.console.is_terminal:
                return
            self.progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self.progress is not None:
            self.progress.stop()
