"""The live progress bar of ``sae-report train``: step, L0, dead %, loss, tokens/s (rich).

It is refreshed when the trainer flushes its metric buffer (the only time the host sees the
metrics), so showing it costs the hot loop nothing.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressDisplay:
    """A rich progress bar on stderr; ``update`` takes the last flushed metric row."""

    def __init__(self, total: int, start: int, run_dir: str, d_sae: int) -> None:
        self.d_sae = d_sae
        self.progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        self.progress.console.print(f"run directory: {run_dir}")
        self.task = self.progress.add_task("train", total=total, completed=start, metrics="starting...")

    def update(self, step: int, row: dict[str, Any], tokens_per_s: float) -> None:
        l0, dead, loss = row.get("l0_frac"), row.get("dead_frac"), row.get("loss")
        parts = []
        if l0 is not None:
            parts.append(f"L0 {100 * l0:.2f}% ({row.get('l0', 0):.1f})")
        if dead is not None:
            parts.append(f"dead {100 * dead:.1f}%")
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        parts.append(f"{tokens_per_s:,.0f} tok/s")
        self.progress.update(self.task, completed=step, metrics=" | ".join(parts))

    def close(self) -> None:
        self.progress.stop()


class NoProgress:
    """Stand-in when no progress bar is wanted."""

    def update(self, step: int, row: dict[str, Any], tokens_per_s: float) -> None:
        pass

    def close(self) -> None:
        pass
