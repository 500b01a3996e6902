"""Schedules of l1_alpha and the learning rate, as pure functions of the step, with their milestones.

Steps are numbered from 1: step ``s`` is the ``s``-th optimizer update and uses ``value(s)``.
Milestones are the steps where a schedule changes regime (end of a warm-up, start of a decay, a
piecewise or step-decay change); the trainer logs them as ``l1_change`` / ``lr_change`` events.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .config import TrainConfig


@dataclass(frozen=True)
class Milestone:
    """A step where a schedule changes regime."""

    step: int
    """The first step the new regime applies to."""
    value: float
    """The value in force at that step."""
    reason: str
    """Short description, e.g. 'warm-up done', 'piecewise', 'decay starts', 'step decay'."""


class L1Schedule:
    """l1_alpha(step) for the constant, warmup and piecewise schedules."""

    def __init__(self, config: TrainConfig) -> None:
        self.kind = config.l1_schedule
        self.alpha = config.l1_alpha
        self.warmup = config.l1_warmup_steps
        sched = config.l1_alpha_schedule or {0: config.l1_alpha}
        self._keys = sorted(sched)
        self._vals = [sched[k] for k in self._keys]
        self.total = config.total_steps

    def __call__(self, step: int) -> float:
        if self.kind == "piecewise":
            return self._vals[bisect.bisect_right(self._keys, step) - 1]
        if self.kind == "warmup" and step < self.warmup:
            return self.alpha * step / self.warmup
        return self.alpha

    def milestones(self) -> list[Milestone]:
        if self.kind == "piecewise":
            return [Milestone(k, v, "piecewise") for k, v in zip(self._keys, self._vals) if 0 < k <= self.total]
        if self.kind == "warmup" and self.warmup <= self.total:
            return [Milestone(self.warmup, self.alpha, "warm-up done")]
        return []


class LRSchedule:
    """learning_rate(step): optional linear warm-up, then constant, cosine, linear or step decay."""

    def __init__(self, config: TrainConfig) -> None:
        self.kind = config.lr_schedule
        self.lr = config.learning_rate
        self.warmup = config.lr_warmup_steps
        self.total = config.total_steps
        decay = config.lr_decay_steps
        after_warmup = max(self.total - self.warmup, 0)
        self.decay_steps = after_warmup if decay is None else min(decay, after_warmup)
        self.decay_start = self.total - self.decay_steps  # last step at full lr
        self.min_ratio = config.lr_min_ratio
        self.milestone_steps = list(config.lr_step_milestones)
        self.gamma = config.lr_step_gamma

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return self.lr * step / self.warmup
        if self.kind in ("cosine", "linear") and self.decay_steps > 0 and step > self.decay_start:
            t = min((step - self.decay_start) / self.decay_steps, 1.0)
            shape = 0.5 * (1 + math.cos(math.pi * t)) if self.kind == "cosine" else 1.0 - t
            return self.lr * (self.min_ratio + (1 - self.min_ratio) * shape)
        if self.kind == "step":
            return self.lr * self.gamma ** bisect.bisect_right(self.milestone_steps, step)
        return self.lr

    def milestones(self) -> list[Milestone]:
        out: list[Milestone] = []
        if self.warmup and self.warmup <= self.total:
            out.append(Milestone(self.warmup, self(self.warmup), "warm-up done"))
        if self.kind in ("cosine", "linear") and self.decay_steps > 0 and self.decay_start + 1 <= self.total:
            out.append(Milestone(self.decay_start + 1, self(self.decay_start + 1), f"{self.kind} decay starts"))
        if self.kind == "step":
            out += [Milestone(m, self(m), "step decay") for m in self.milestone_steps if m <= self.total]
        return sorted(out, key=lambda m: m.step)
