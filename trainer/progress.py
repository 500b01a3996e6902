"""What ``sae-report train`` shows while it trains: step/total, ETA, L0, dead %, loss, tokens/s.

- on a terminal (stderr is a TTY): a rich progress bar, fitted to the terminal's width: the less
  important fields (L0 as a count, tokens/s, elapsed time, loss, the bar itself) are left out
  first, so that the step count and the ETA are never cut, even at 80 columns or less;
- redirected to a file (SLURM, nohup, ``2> log``): a plain line at every 10% of the run and at least
  once a minute (``step 300/3,000 10% | L0 12.34% | dead 0.0% | loss 0.1234 | 52,100 tok/s | eta 27s``);
- ``-q``: nothing but the warnings (a run that will take hours, a thread collapse).

Everything is refreshed when the trainer flushes its metric buffer (the only time the host sees
the metrics), so showing it costs the training step nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task
from rich.text import Text

from .threads import fmt_duration

#: A plain progress line at least every this many seconds (and at every 10% of the run).
LINE_EVERY_S = 60.0
#: Bar width range on a terminal (the bar goes before the loss, the elapsed time and tokens/s).
BAR_MIN, BAR_MAX = 10, 20
SEP = " | "


class _State:
    """The last flushed values, shared by the displays."""

    def __init__(self, total: int, start: int, d_sae: int) -> None:
        self.total, self.step, self.d_sae = total, start, d_sae
        self.row: dict[str, Any] = {}
        self.tokens_per_s: float | None = None
        self.eta: float | None = None
        self.eta_at = time.monotonic()

    def set(self, step: int, row: dict[str, Any], tokens_per_s: float | None, eta: float | None) -> None:
        self.step, self.row, self.tokens_per_s, self.eta = step, dict(row), tokens_per_s, eta
        self.eta_at = time.monotonic()

    def eta_now(self) -> float | None:
        """The ETA of the last flush, counted down since."""
        if self.eta is None:
            return None
        return max(0.0, self.eta - (time.monotonic() - self.eta_at))

    def pieces(self, elapsed: float | None) -> dict[str, str]:
        """Each field as text, by name (absent when not known yet)."""
        out = {"step": f"{self.step:,}/{self.total:,}"}
        eta = self.eta_now()
        if self.step >= self.total:
            out["eta"] = "done"
        else:
            out["eta"] = f"eta {fmt_duration(eta)}" if eta is not None else "eta -"
        if elapsed is not None:
            out["elapsed"] = fmt_duration(elapsed)
        r = self.row
        if r.get("l0_frac") is not None:
            out["l0"] = f"L0 {100 * r['l0_frac']:.2f}%"
            if r.get("l0") is not None:
                out["l0n"] = f"({r['l0']:.1f})"
        if r.get("dead_frac") is not None:
            out["dead"] = f"dead {100 * r['dead_frac']:.1f}%"
        if r.get("loss") is not None:
            out["loss"] = f"loss {r['loss']:.4g}"
        if self.tokens_per_s:
            out["tps"] = f"{self.tokens_per_s:,.0f} tok/s"
        return out


#: Most important first: what is left out at a narrow width goes from the end of this list.
PRIORITY = ("step", "eta", "l0", "dead", "bar", "loss", "elapsed", "tps", "l0n")


def _join(p: dict[str, str], keep: set[str]) -> str:
    head = " ".join(p[k] for k in ("step", "elapsed", "eta") if k in keep and k in p)
    l0 = " ".join(p[k] for k in ("l0", "l0n") if k in keep and k in p)
    groups = [head, l0, *(p[k] for k in ("dead", "loss", "tps") if k in keep and k in p)]
    return SEP.join(g for g in groups if g)


def fit_status(p: dict[str, str], width: int) -> tuple[int, str]:
    """(bar width or 0, text) that fit in ``width`` columns together (a space between them), the
    fields kept in ``PRIORITY`` order: the step count and the ETA always, the rest while there is room."""
    keep: set[str] = set()
    bar = 0
    for name in PRIORITY:
        if name == "bar":
            room = width - 1 - len(_join(p, keep)) - 1
            if room >= BAR_MIN:
                bar = min(BAR_MAX, room)
            continue
        if name not in p:
            continue
        trial = keep | {name}
        if name in ("step", "eta") or len(_join(p, trial)) + (bar + 1 if bar else 0) <= width - 1:
            keep = trial
    return bar, _join(p, keep)


class _FittedBar(BarColumn):
    def __init__(self, display: "ProgressDisplay") -> None:
        super().__init__(bar_width=BAR_MAX)
        self.display = display

    def render(self, task: Task) -> Any:
        bar, _ = self.display.layout(task)
        if not bar:
            return Text("")
        self.bar_width = bar
        return super().render(task)


class _StatusColumn(ProgressColumn):
    def __init__(self, display: "ProgressDisplay") -> None:
        super().__init__()
        self.display = display

    def render(self, task: Task) -> Text:
        _, text = self.display.layout(task)
        return Text(text, no_wrap=True, overflow="crop")


class ProgressDisplay:
    """A rich progress bar on stderr (a terminal); ``update`` takes the last flushed metric row."""

    def __init__(self, total: int, start: int, run_dir: str, d_sae: int, info: str | None = None,
                 console: Console | None = None) -> None:
        self.state = _State(total, start, d_sae)
        self.console = console or Console(stderr=True)
        self.progress = Progress(_FittedBar(self), _StatusColumn(self), console=self.console, transient=False)
        self.progress.start()
        self.progress.console.print(f"run directory: {run_dir}", soft_wrap=True, highlight=False, markup=False)
        if info:
            self.progress.console.print(info, soft_wrap=True, highlight=False, markup=False)
        self.task = self.progress.add_task("train", total=total, completed=start)

    def layout(self, task: Task) -> tuple[int, str]:
        width = self.console.width
        return fit_status(self.state.pieces(task.elapsed), width)

    def update(self, step: int, row: dict[str, Any], tokens_per_s: float | None, eta: float | None = None) -> None:
        self.state.set(step, row, tokens_per_s, eta)
        self.progress.update(self.task, completed=step)

    def warn(self, message: str) -> None:
        self.progress.console.print(Text(f"warning: {message}", style="yellow"))  # above the bar, wrapped

    def close(self) -> None:
        self.progress.stop()


class LineProgress:
    """Plain lines for a log file: at every 10% of the run and at least every LINE_EVERY_S seconds."""

    def __init__(self, total: int, start: int, run_dir: str, d_sae: int, info: str | None = None,
                 stream: TextIO | None = None) -> None:
        self.state = _State(total, start, d_sae)
        self.stream = stream if stream is not None else sys.stderr
        self.start, self.total = start, total
        self.tenth = max(1, (total - start) / 10)
        self.next_step = start + self.tenth
        self.last_print = time.monotonic()
        self._print(f"run directory: {run_dir}")
        if info:
            self._print(info)

    def _print(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or full log file must not stop the training
            pass

    def line(self) -> str:
        p = self.state.pieces(None)
        pct = f"{100 * self.state.step / max(1, self.total):.0f}%"
        head = f"step {p['step']} {pct}"
        return SEP.join([head, *(p[k] for k in ("l0", "dead", "loss", "tps", "eta") if k in p)])

    def update(self, step: int, row: dict[str, Any], tokens_per_s: float | None, eta: float | None = None) -> None:
        self.state.set(step, row, tokens_per_s, eta)
        now = time.monotonic()
        if step >= self.next_step or now - self.last_print >= LINE_EVERY_S or step >= self.total:
            while self.next_step <= step:
                self.next_step += self.tenth
            self.last_print = now
            self._print(self.line())

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def close(self) -> None:
        pass


class NoProgress:
    """``-q`` (or ``progress=False``): nothing but the warnings, one line each on stderr."""

    def update(self, step: int, row: dict[str, Any], tokens_per_s: float | None, eta: float | None = None) -> None:
        pass

    def warn(self, message: str) -> None:
        try:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        pass


def make_display(progress: bool, total: int, start: int, run_dir: str, d_sae: int,
                 info: str | None = None) -> ProgressDisplay | LineProgress | NoProgress:
    """The bar on a terminal, plain lines when stderr is redirected, nothing with ``progress=False``."""
    if not progress:
        return NoProgress()
    console = Console(stderr=True)
    if console.is_terminal or console.is_jupyter:
        return ProgressDisplay(total, start, run_dir, d_sae, info, console=console)
    return LineProgress(total, start, run_dir, d_sae, info)
