"""A tuning campaign as data: its runs (``Iteration``), the campaign itself (``Campaign``), and
its state on disk, ``campaign.json`` (written atomically; a folder holding another campaign's
config or target is refused). The loop that runs it is ``tune/loop.py``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runlog import atomic_write_text, to_jsonable

STATE_FILE = "campaign.json"
#: Keys that may differ between the campaign's runs (everything else must match the base config).
FREE_KEYS = frozenset({"l1_alpha", "l1_alpha_schedule", "l0_coefficient", "run_id", "schema_version", "threads", "device",
                       "flush_every", "flush_secs", "checkpoint_every", "keep_checkpoints", "tf32"})




class TuneError(Exception):
    """A campaign that cannot go on (one line)."""


@dataclass
class Iteration:
    """One run of the campaign."""

    index: int
    """1-based iteration number."""
    run_id: str
    """Run directory name."""
    l1_alpha: float
    """The run's sparsity coefficient: l1_alpha, or a JumpReLU SAE's l0_coefficient (the campaign's
    ``coefficient``)."""
    why: str
    """Why this l1_alpha (the recommendation's explanation, or "starting config")."""
    recommendation: dict[str, Any] | None = None
    """The l1 recommendation that chose this run (None for the first)."""
    status: str = "planned"
    """planned / completed / interrupted / diverged / failed."""
    reused: bool = False
    """True when the run was already on disk when this invocation started."""
    row: dict[str, Any] | None = None
    """The run's comparison row (settled L0, final L0, dead, loss, duration, ...)."""
    within: bool = False
    """Settled L0 within tolerance of the target."""
    findings: list[dict[str, Any]] = field(default_factory=list)
    """Warn/fail findings of the analyzer: ``{"kind", "step", "explanation"}``."""
    advice: list[dict[str, Any]] = field(default_factory=list)
    """Rules beyond l1_alpha for this run (reported, not applied: the sweep stays on l1_alpha)."""
    train_seconds: float | None = None
    """Wall-clock seconds this invocation spent training it (None when reused)."""
    total_steps: int | None = None
    """Steps the run was (or is to be) trained to."""
    unsettled: str = ""
    """Why its L0 has not settled ("" when it has): such a run is never the answer."""
    lengthen: bool = False
    """True when ``unsettled`` is a trend that more steps can fix (a swing is not)."""
    lengthened: list[dict[str, Any]] = field(default_factory=list)
    """Each time it was lengthened: ``{"from", "to", "why", "resumed"}``."""
    round: int = 0
    """The round it was planned in (1-based; 0 in a campaign.json from before rounds): the runs of
    one round are trained at once, one per device slot (``--devices`` / ``--parallel``)."""
    device: str | None = None
    """The device slot it last trained on (None: in this process, on the config's device)."""
    error: str = ""
    """Why its last training failed, in one line ("" when it did not)."""


@dataclass
class Campaign:
    """A tuning campaign."""

    out_dir: Path
    """The campaign folder."""
    target_l0: float
    """Target L0 fraction."""
    tolerance: float
    """Relative tolerance (0.1 = settled L0 within 10% of the target)."""
    max_runs: int
    """Run budget (runs already in the folder count)."""
    base_config: dict[str, Any]
    """The resolved starting config."""
    iterations: list[Iteration] = field(default_factory=list)
    """Runs so far."""
    status: str = "running"
    """running / reached / budget_spent / saturated / stuck / unsettled / interrupted / failed."""
    message: str = ""
    """How it ended, in words."""
    best: str | None = None
    """Run id of the final choice (settled L0 closest to the target)."""
    next_recommendation: dict[str, Any] | None = None
    """The recommendation for a further run when the target was not reached."""
    started: float = field(default_factory=time.time)
    """Unix time this invocation started."""
    total_steps: int = 0
    """Length of the campaign's runs now (the configured total_steps, raised when a run was too short
    for L0 to settle)."""
    max_steps: int = 0
    """The most steps a run may be lengthened to."""
    coefficient: str = "l1_alpha"
    """The coefficient the campaign varies: ``l1_alpha``, or ``l0_coefficient`` for a JumpReLU SAE
    (the same direction rule: raise it -> lower L0)."""
    parallel: int = 1
    """Runs trained at once (a round plans this many: the recommendation and points across its
    interval)."""
    where: str = ""
    """Where this invocation trains, in words ("" in this process, one run at a time)."""

    def best_iteration(self) -> Iteration | None:
        """The iteration of the final choice."""
        return next((it for it in self.iterations if it.run_id == self.best), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``campaign.json``)."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return to_jsonable(d)


def coefficient_of(base_cfg: Any) -> str:
    """The coefficient a campaign varies for ``base_cfg``'s variant (TuneError for TopK / BatchTopK,
    whose L0 is set by k: there is nothing to tune toward a target L0)."""
    variant = getattr(base_cfg, "sae_variant", "standard")
    if variant in ("topk", "batchtopk"):
        k, d_sae = getattr(base_cfg, "k", None), getattr(base_cfg, "d_sae", None)
        hint = f" (k = target_l0 x d_sae, e.g. {max(1, round(float(base_cfg.target_l0) * d_sae))})" if d_sae else ""
        raise TuneError(f"sae_variant {variant}: L0 is set by k ({k}), so there is no sparsity coefficient to tune "
                        f"toward a target L0; set k to the L0 you want{hint} and train once "
                        "(sae-report analyze then advises on k and AuxK)")
    return "l0_coefficient" if variant == "jumprelu" else "l1_alpha"


def load_state(out_dir: Path) -> dict[str, Any] | None:
    """``campaign.json`` of ``out_dir`` as plain data (None when there is none)."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise TuneError(f"{path}: not readable JSON (move it away to start a new campaign)") from None


def check_same_campaign(out_dir: Path, state: dict[str, Any] | None, base: dict[str, Any], target: float) -> None:
    """Refuse (``TuneError``, one line) a folder whose campaign has another config or target."""
    if state is None:
        return
    old = state.get("base_config") or {}
    # keys only one side knows (a trainer version that added a setting) are not a difference
    diff = sorted(k for k in set(old) & set(base) if k not in FREE_KEYS and k != "target_l0" and old[k] != base[k])
    if diff:
        k = diff[0]
        raise TuneError(f"{out_dir}: holds a campaign with a different config ({k}: {old.get(k)!r} there, "
                        f"{base.get(k)!r} now); use another --out")
    if not math.isclose(float(state.get("target_l0", target)), target, rel_tol=1e-9):
        raise TuneError(f"{out_dir}: holds a campaign for target L0 {state.get('target_l0')}, not {target}; "
                        "use another --out")


def save_state(campaign: Campaign) -> None:
    """Write ``campaign.json`` atomically."""
    atomic_write_text(campaign.out_dir / STATE_FILE, json.dumps(campaign.to_dict(), indent=2, allow_nan=False) + "\n")
