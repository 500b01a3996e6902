"""The ``sae-report`` console script. Loading the command line takes a few tenths of a second
(polars, numpy, click); a Ctrl-C or SIGTERM in that window is held until loading is done and then
ends the program with one line and exit code 130, never with a traceback from inside an import."""

from __future__ import annotations

import signal
import sys
from typing import Any

_HELD = (signal.SIGINT, signal.SIGTERM)


def main() -> None:
    """Load the command line with interrupts held, then run it."""
    caught: list[int] = []
    previous: dict[int, Any] = {}
    for sig in _HELD:
        try:
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
        except ValueError:  # not the main thread: nothing to hold
            pass
    try:
        from .cli import main as cli
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        sys.stderr.write("Error: interrupted while sae-report was starting; nothing was done\n")
        raise SystemExit(130)
    cli()
