"""Compare runs: the table of the write-up, the finding across runs, confounders, the l1 fit."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..recommend.fit import L1Recommendation, RunPoint, recommend_l1
from ..runlog import RunData, RunLogError, to_jsonable
from .fidelity import FaithfulChoice
from .fidelity import choose as choose_faithful
from .runs import RunRow, expand_paths, run_row

#: Keys other tools (and our provenance) write that say nothing about training dynamics; our own
#: config's bookkeeping keys are ``trainer.config.BOOKKEEPING_KEYS`` (``TrainConfig.settings()``).
IGNORED_KEYS = frozenset({
    "run_id", "schema_version", "created", "created_at", "started_at", "provenance", "git",
    "host", "hostname", "version", "sae_report_version", "torch_version", "out_dir", "run_dir",
    "progress", "resume", "name", "notes", "wandb", "command", "python", "platform", "dtype",
    "scenario", "start_time", "device_requested", "dead_window_steps", "dead_window_tokens", "loss_formula",
    "init_from_step", "input_scale",
})
#: The parameter a comparison sweeps (and its piecewise schedule, scaled with it).
SWEPT = "l1_alpha"
SWEPT_KEYS = frozenset({SWEPT, "l1_alpha_schedule", "l0_coefficient"})


@functools.lru_cache(maxsize=1)
def training_keys() -> frozenset[str]:
    """The config keys that are training settings, the only ones a confounder can be: the fields of
    the trainer's ``TrainConfig`` plus the canonical keys the aliases (`runlog.aliases`) fill in from other
    tools' configs (``learning_rate`` from SAELens' ``lr``, ``d_sae`` from ``dict_size``, ...), less
    ``IGNORED_KEYS``. Bookkeeping (``imported_from``, ``logger``, W&B's nested sections, run ids,
    paths) is never compared."""
    from ..runlog.aliases import CONFIG_ALIASES, TOKEN_KEYS

    from trainer.config import BOOKKEEPING_KEYS

    # counts in tokens (training_tokens) are compared as the steps they give (total_steps)
    return frozenset((set(_trainer_fields()) | set(CONFIG_ALIASES)) - IGNORED_KEYS - BOOKKEEPING_KEYS - set(TOKEN_KEYS))


def _trainer_fields() -> list[str]:
    """``TrainConfig``'s training settings (``trainer.config`` imports without torch)."""
    from trainer.config import TrainConfig

    return TrainConfig.settings()


@dataclass(frozen=True)
class Confounder:
    """A setting that changed across runs besides the swept one."""

    key: str
    """Config key."""
    values: dict[str, Any]
    """Run id -> value."""
    message: str
    """The warning in words."""


@dataclass
class Comparison:
    """What comparing runs found."""

    rows: list[RunRow]
    """All runs, in l1_alpha order (excluded ones included, with their reason)."""
    target_l0: float | None
    """Target L0 fraction (flag, else the runs' common config value)."""
    target_source: str
    """``flag``, ``config`` or ``none``."""
    key_finding: str
    """The finding across runs in words."""
    recommendation: L1Recommendation | None
    """The l1_alpha fit (None without a target or usable runs)."""
    no_recommendation_reason: str = ""
    """Why there is no recommendation."""
    confounders: list[Confounder] = field(default_factory=list)
    """Settings that changed besides l1_alpha."""
    warnings: list[str] = field(default_factory=list)
    """Comparison-level warnings (confounders, unstable runs, exclusions)."""
    unreadable: list[dict[str, str]] = field(default_factory=list)
    """Paths that could not be read: ``{"path", "reason"}``."""
    faithful: FaithfulChoice | None = None
    """With a floor on the spliced-in loss score (``min_ce_loss_score``): the sparsest run that keeps
    it (``compare.fidelity``)."""
    coefficient: str = "l1_alpha"
    """The sparsity coefficient the runs are compared and fitted on: ``l1_alpha``, or
    ``l0_coefficient`` when they are JumpReLU SAEs (each row's ``l1_alpha`` holds its value). Runs of
    another architecture are excluded; TopK / BatchTopK runs always are (k sets their L0)."""

    @property
    def used(self) -> list[RunRow]:
        """Rows that enter the fit."""
        return [r for r in self.rows if r.excluded is None]

    @property
    def excluded(self) -> list[RunRow]:
        """Rows left out of the fit."""
        return [r for r in self.rows if r.excluded is not None]

    def points(self) -> list[RunPoint]:
        """The fit's input."""
        return [RunPoint(r.id, float(r.l1_alpha), float(r.settled_l0), r.l0_noise) for r in self.used]

    def latest(self) -> RunRow | None:
        """The most recent run with a config (even an excluded one: a diverged last run is what the
        next run follows), else the most recent run."""
        pool = [r for r in self.rows if r.config and not (r.excluded or "").startswith(("d_sae", "d_in"))]
        pool = pool or self.rows
        return max(pool, key=lambda r: r.order) if pool else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (the ``comparison.json`` document)."""
        return to_jsonable({
            "target_l0": self.target_l0,
            "target_source": self.target_source,
            "key_finding": self.key_finding,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "no_recommendation_reason": self.no_recommendation_reason,
            "runs": [{k: v for k, v in asdict(r).items() if k != "order"} for r in self.rows],
            "excluded": [{"id": r.id, "reason": r.excluded} for r in self.excluded],
            "confounders": [asdict(c) for c in self.confounders],
            "warnings": self.warnings,
            "unreadable": self.unreadable,
            "coefficient": self.coefficient,
            "faithful": asdict(self.faithful) if self.faithful else None,
        })


def load_runs(paths: Sequence[str | Path], *, column_map: Any = None) -> tuple[list[RunData], list[dict[str, str]]]:
    """Read runs (paths, globs, directories of runs); unreadable ones come back with a reason.
    ``column_map``: metric names the aliases do not know (``{"loss/total": "loss"}``; see
    ``sae_report.ingest.load_run``)."""
    from ..ingest import load_run, mapped_columns

    datas, bad = [], []
    with mapped_columns(column_map):
        for p in expand_paths([str(x) for x in paths]):
            try:
                datas.append(load_run(p))
            except RunLogError as exc:
                bad.append({"path": str(p), "reason": str(exc)})
    return datas, bad


def compare_runs(paths: Sequence[str | Path] | None = None, target_l0: float | None = None, *,
                 runs: Sequence[RunData] | None = None, column_map: Any = None,
                 min_ce_loss_score: float | None = None) -> Comparison:
    """Compare runs given as paths (or already read, ``runs=``) against ``target_l0`` (a fraction,
    or a count of features of 1 or more, converted with the runs' common d_sae: ``ValueError`` when
    they have none or several); ``column_map`` names metrics the aliases do not know (see
    ``load_runs``). ``min_ce_loss_score``: also name the sparsest run whose spliced-in loss score
    stays at or above it (``Comparison.faithful``)."""
    datas, bad = (list(runs), []) if runs is not None else load_runs(paths or [], column_map=column_map)
    if target_l0 and target_l0 >= 1:
        target_l0 = target_l0 / _common_d_sae(datas, target_l0)
    target_source = "flag" if target_l0 else "none"
    if not target_l0:
        targets = {float(t) for d in datas if (t := _cfg_target(d)) is not None}
        if len(targets) == 1:
            target_l0, target_source = targets.pop(), "config"
    rows = [run_row(d, target_l0) for d in datas]
    _unique_ids(rows)
    _exclude_mismatched_shapes(rows)
    coefficient = _exclude_other_architectures(rows)
    rows.sort(key=lambda r: (r.l1_alpha is None, r.l1_alpha or 0.0, r.id))
    comp = Comparison(rows=rows, target_l0=target_l0, target_source=target_source, key_finding="",
                      recommendation=None, unreadable=bad, coefficient=coefficient)
    comp.confounders = find_confounders(comp.used)
    comp.warnings.extend(c.message for c in comp.confounders)
    for r in comp.rows:
        if r.unstable and r.excluded is None:
            comp.warnings.append(f"{r.id}: {r.warnings[0] if r.warnings else 'second half unstable'}; "
                                 "its settled L0 is uncertain (the fit weights it less)")
    for r in comp.excluded:
        comp.warnings.append(f"{r.id}: excluded from the fit - {r.excluded}")
    for b in bad:
        comp.warnings.append(f"{b['reason']} (not compared)")
    fixed = [r for r in comp.rows if r.coefficient is None]
    if fixed and len(fixed) == len(comp.rows):
        comp.no_recommendation_reason = ("L0 is set by k in every run (TopK / BatchTopK): there is no sparsity "
                                         "coefficient to fit; sae-report analyze advises on k and AuxK")
    elif not target_l0:
        comp.no_recommendation_reason = "no target L0: pass --target-l0 (e.g. 0.05 for 5%)"
    elif not comp.used:
        comp.no_recommendation_reason = "no run is usable for the fit (see the exclusions)"
    else:
        comp.recommendation = recommend_l1(comp.points(), target_l0, coefficient)
    if min_ce_loss_score is not None:
        comp.faithful = choose_faithful(comp.rows, min_ce_loss_score)
    comp.key_finding = key_finding(comp)
    if comp.faithful is not None:
        comp.key_finding += " " + comp.faithful.text
    return comp


def _common_d_sae(datas: Sequence[RunData], count: float) -> int:
    """The d_sae the runs share, to read a target given as a count of features."""
    sizes = {row.d_sae for d in datas if (row := run_row(d, None)).d_sae}
    if len(sizes) != 1:
        have = ", ".join(str(s) for s in sorted(sizes)) if sizes else "none recorded"
        raise ValueError(f"a target L0 of {count:g} features needs the runs' dictionary size, and they have "
                         f"{'several' if sizes else 'none'} (d_sae: {have}); give it as a fraction (0.05) or percent (5%)")
    return int(sizes.pop())


def _exclude_other_architectures(rows: list[RunRow]) -> str:
    """The coefficient the comparison fits (that of most usable runs, ``l1_alpha`` on a tie); runs
    whose coefficient is another one are excluded (a JumpReLU L0 coefficient and an L1 coefficient
    are not on one scale). TopK / BatchTopK rows are already excluded (``run_row``)."""
    counts = Counter(r.coefficient for r in rows if r.excluded is None and r.coefficient)
    if not counts:
        return next((r.coefficient for r in rows if r.coefficient), "k" if rows and all(r.coefficient is None for r in rows) else "l1_alpha")  # type: ignore[return-value]
    top = max(counts.values())
    coefficient = "l1_alpha" if counts.get("l1_alpha") == top else counts.most_common(1)[0][0]
    for r in rows:
        if r.excluded is None and r.coefficient != coefficient:
            r.excluded = (f"a {r.architecture} SAE: its {r.coefficient} is not on the same scale as the other runs' "
                          f"{coefficient}")
    return coefficient  # type: ignore[return-value]


def _cfg_target(data: RunData) -> float | None:
    from .runs import canonical

    try:
        t = float(canonical(dict(data.config)).get("target_l0"))
    except (TypeError, ValueError):
        return None
    return t if 0 < t <= 1 else None


def _unique_ids(rows: list[RunRow]) -> None:
    """Runs that share an id (exports all named ``metrics.csv``, W&B runs of one name) get their
    folder's name, else a number: every row of a comparison is told apart."""
    counts = Counter(r.id for r in rows)
    taken = {r.id for r in rows if counts[r.id] == 1}
    for r in rows:
        if counts[r.id] == 1:
            continue
        path = Path(r.path)
        folder = path.name if path.is_dir() or not path.suffix else path.parent.name
        new = f"{r.id} ({folder})" if folder and folder != r.id else r.id
        n = 2
        base = new
        while new in taken:
            new = f"{base} #{n}"
            n += 1
        taken.add(new)
        r.id = new


def _exclude_mismatched_shapes(rows: list[RunRow]) -> None:
    for key in ("d_sae", "d_in"):
        values = Counter(getattr(r, key) for r in rows if r.excluded is None and getattr(r, key) is not None)
        if len(values) <= 1:
            continue
        common, _ = values.most_common(1)[0]
        for r in rows:
            v = getattr(r, key)
            if r.excluded is None and v is not None and v != common:
                r.excluded = f"{key} {v:,} differs from the other runs' {common:,} (L0 is not comparable)"


def _comparable(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, (list, dict)):
        return repr(v)
    return v


def find_confounders(rows: Sequence[RunRow]) -> list[Confounder]:
    """Training settings (``training_keys()``; besides l1_alpha) whose values differ between the rows."""
    if len(rows) < 2:
        return []
    settings = training_keys()
    keys = sorted(k for k in set().union(*(r.config.keys() for r in rows)) - SWEPT_KEYS
                  if k in settings and not str(k).startswith("target_"))  # targets describe the goal
    out = []
    for key in keys:
        values = {r.id: _comparable(r.config.get(key)) for r in rows}
        if len({repr(v) for v in values.values()}) <= 1:
            continue
        shown = ", ".join(f"{rid}={v}" for rid, v in values.items())
        swept = rows[0].coefficient or "l1_alpha"
        out.append(Confounder(key=key, values=values, message=(
            f"Confounder: {key} changed together with {swept} ({shown}); the L0 differences are not "
            f"due to {swept} alone.")))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3g}%"


def key_finding(comp: Comparison) -> str:
    """The finding across runs in words (the write-up's "Key Finding"), naming the comparison's
    coefficient (``l1_alpha``, or ``l0_coefficient`` for JumpReLU runs)."""
    text = _key_finding(comp)
    return text if comp.coefficient == "l1_alpha" else text.replace("l1_alpha", comp.coefficient)


def _key_finding(comp: Comparison) -> str:
    used = comp.used
    if comp.rows and all(r.coefficient is None for r in comp.rows):
        pairs = ", ".join(f"{r.id}: k {r.k:g} -> settled L0 {_pct(r.settled_l0)}, dead {_pct(r.dead_frac)}"
                          if r.k is not None else f"{r.id}: settled L0 {_pct(r.settled_l0)}" for r in comp.rows)
        return (f"L0 is set by k in every run (TopK / BatchTopK), so there is no sparsity coefficient to fit and no L0 "
                f"target to meet ({pairs}). Compare them on dead latents and reconstruction; sae-report analyze "
                "advises on k and on AuxK.")
    if not used:
        return "No run could be placed on the l1_alpha/L0 curve (see the exclusions)."
    pairs = ", ".join(f"{r.l1_alpha:g} -> {_pct(r.settled_l0)}" for r in used)
    if len(used) == 1:
        text = f"One usable run: l1_alpha {pairs} settled L0 (second-half median)."
    else:
        l0s = [r.settled_l0 for r in used if r.settled_l0]
        distinct = len({r.l1_alpha for r in used}) > 1
        falling = all(b <= a for a, b in zip(l0s, l0s[1:]))
        if distinct and falling:
            text = (f"L0 falls as l1_alpha rises: l1_alpha {pairs} (settled L0, second-half median). "
                    "Higher l1_alpha = stronger sparsity penalty = fewer active features = lower L0; "
                    "lower l1_alpha = weaker penalty = more active features = higher L0.")
        else:
            text = (f"The runs do not fall monotonically with l1_alpha ({pairs}, settled L0): noise, "
                    "unsettled runs or confounders; the fit pools the contradicting runs.")
    rec = comp.recommendation
    if rec is not None and rec.bracket:
        lo = next(r for r in used if r.id == rec.bracket[0])
        hi = next(r for r in used if r.id == rec.bracket[1])
        text += (f" The {fmt_target(comp.target_l0)} target lies between l1_alpha {lo.l1_alpha:g} "
                 f"({_pct(lo.settled_l0)}) and {hi.l1_alpha:g} ({_pct(hi.settled_l0)}): the next l1_alpha "
                 f"belongs between them, about {rec.l1_alpha:.3g} ({rec.direction} l1_alpha relative to "
                 f"{rec.reference_l1_alpha:g}).")
    elif rec is not None:
        text += (f" No run brackets the {fmt_target(comp.target_l0)} target: {rec.direction} l1_alpha beyond "
                 f"{rec.reference_l1_alpha:g}, about {rec.l1_alpha:.3g} (extrapolated).")
    elif comp.no_recommendation_reason:
        text += f" No l1_alpha recommendation: {comp.no_recommendation_reason}."
    misled = [r for r in used if r.settled_l0 and r.final_l0 and abs(r.final_l0 / r.settled_l0 - 1) > 0.25]
    if misled:
        text += " Final points mislead: " + "; ".join(
            f"{r.id} ended at {_pct(r.final_l0)} but settled at {_pct(r.settled_l0)}" for r in misled) + "."
    if comp.confounders:
        text += " Caution: " + ", ".join(c.key for c in comp.confounders) + " also changed between runs."
    return text


def comparison_for_siblings(run_path: Path, *, target_l0: float | None = None,
                            loaded: RunData | None = None) -> Comparison | None:
    """Compare a run with its siblings (same parent folder, same d_in/d_sae); None when alone.

    For ``analyze``'s "Comparison to previous trainings". ``loaded`` is the run at ``run_path``
    already read by the caller: it is used as is instead of being read a second time.
    """
    run_path = Path(run_path).resolve()
    from .runs import _children_runs

    siblings = _children_runs(run_path.parent)
    if len(siblings) < 2 or not any(p.resolve() == run_path for p in siblings):
        return None
    others = [p for p in siblings if p.resolve() != run_path]
    if loaded is None:
        datas, _ = load_runs([run_path, *others])
        me = next((d for d in datas if Path(d.path).resolve() == run_path), None)
        if me is None:
            return None
    else:
        me = loaded
        datas = [me, *load_runs(others)[0]]
    mine = run_row(me, None)
    # the same shape and the same sparsity coefficient (an L1 run, a JumpReLU run and a TopK run are
    # not points on one curve)
    same = [d for d in datas if d is me or (_same_shape(row := run_row(d, None), mine)
                                            and row.coefficient == mine.coefficient)]
    if len(same) < 2:
        return None
    return compare_runs(runs=same, target_l0=target_l0)


def _same_shape(a: RunRow, b: RunRow) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ("d_in", "d_sae") if getattr(b, k) is not None)


def fmt_target(target: float | None) -> str:
    """``5%`` for a target fraction."""
    return "-" if not target else f"{100 * target:.3g}%"


__all__ = ["Comparison", "Confounder", "compare_runs", "comparison_for_siblings", "find_confounders",
           "key_finding", "load_runs", "fmt_target"]
