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
    """The sparsity coefficient at each step: l1_alpha(step) for the constant, warmup and piecewise
    schedules; for jumprelu l0_coefficient(step) (constant, or a warm-up over l0_warmup_steps); for
    topk and batchtopk the constant aux_loss_coefficient (their sparsity is set by k: ``KSchedule``)."""

    def __init__(self, config: TrainConfig) -> None:
        self.kind = config.l1_schedule
        self.alpha = config.l1_alpha
        self.warmup = config.l1_warmup_steps
        if config.sae_variant == "jumprelu":
            self.alpha = config.l0_coefficient
            self.warmup = config.l0_warmup_steps
            self.kind = "warmup" if self.warmup else "constant"
        elif config.sae_variant in ("topk", "batchtopk"):
            self.alpha, self.warmup, self.kind = config.aux_loss_coefficient, 0, "constant"
        sched = config.l1_alpha_schedule or {0: self.alpha}
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


class KSchedule:
    """topk/batchtopk: k(step), falling linearly from min(d_sae, 10 * d_in) to k over the first
    k_decay_steps steps (sparsify's schedule), then k. ``None`` for the other variants."""

    def __init__(self, config: TrainConfig) -> None:
        self.k = config.k
        self.decay = config.k_decay_steps if config.k is not None else 0
        self.start = min(int(config.d_sae or 0), 10 * int(config.d_in or 0)) if self.decay else 0
        self.total = config.total_steps

    def __call__(self, step: int) -> int | None:
        if self.k is None:
            return None
        if self.decay and step < self.decay and self.start > self.k:
            t = step / self.decay
            return int(round(self.start * (1 - t) + self.k * t))
        return int(self.k)

    def milestones(self) -> list[Milestone]:
        if self.decay and self.start > (self.k or 0) and self.decay <= self.total:
            return [Milestone(self.decay, float(self.k), "k decay done")]  # type: ignore[arg-type]
        return []
