"""Interleaved measurement rounds shared by the benchmarks: every mode once per round, so a slow
spell of the machine hits all modes alike; medians per mode."""

from __future__ import annotations

import statistics
from typing import Callable


def interleaved(modes: dict[str, Callable[[], float]], repeats: int, width: int = 8) -> dict[str, float]:
    """Run each mode ``repeats`` times in turn (one round = every mode once), printing each figure
    (tokens/s); a mode that raises RuntimeError is reported and left out of that round. Returns the
    median per mode that produced a figure."""
    results: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(repeats):
        for name, fn in modes.items():
            try:
                results[name].append(fn())
            except RuntimeError as exc:
                print(f"  {name}: failed ({exc})")
                continue
            print(f"  round {r + 1}: {name:{width}s} {results[name][-1]:>12,.0f} tokens/s", flush=True)
    return {m: statistics.median(v) for m, v in results.items() if v}
