"""The tuning loop: train, analyze, recommend, train again until the settled L0 is within tolerance
of the target or the run budget is spent.

State lives on disk only: the campaign folder holds one run directory per iteration
(``iter_01_l1_0.03`` ...) and ``campaign.json`` (the plan and the results so far, written
atomically before and after each run). Restarting the same command reuses completed runs, resumes
an interrupted one from its last checkpoint, and carries on.

A run is only an answer when it settled: a second half whose L0 still trends (``settled_level``'s
drift, or the analyzer's ``not_converged`` finding on L0) or swings is not settled, so the campaign
never stops on it and never writes its config as ``best_config.yaml``. A run that still trends is
lengthened (``total_steps`` doubled, resumed from its final checkpoint when the schedules allow,
else trained afresh) up to ``max_steps`` (default ``MAX_STEPS_FACTOR`` x the configured
``total_steps``); the campaign's later runs use the longer length. When the limit is reached and L0
still trends, the campaign stops (status ``unsettled``) and says how many steps to allow.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ..runlog import LockHeldError, RunLogError, is_run_dir, lock_folder, read_run
from ..runlog.writer import sweep_temp_files
from .campaign import Campaign, Iteration, TuneError, check_same_campaign, load_state, coefficient_of, save_state
from .plan import config_for, plan_round
from .runner import Children, InProcess, Job

#: Default limit on lengthening: a run may grow to this many times the configured total_steps.
MAX_STEPS_FACTOR = 4
#: A run whose L0 still trends is lengthened by this factor (up to max_steps).
LENGTHEN_FACTOR = 2
#: Metrics whose ``not_converged`` finding means the run's L0 has not settled.
L0_METRICS = ("l0_frac", "l0")
ProgressFn = Callable[[str, Campaign, "Iteration | None"], None]


def _within(settled: float | None, target: float, tol: float) -> bool:
    return settled is not None and settled > 0 and abs(settled / target - 1) <= tol + 1e-12


def _steps(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _round_steps(v: float) -> int:
    """Two significant figures (1,200 not 1,199)."""
    from ..recommend.rules import _round_steps as r

    return r(v)


def _row_of(run_dir: Path, target: float) -> tuple[dict[str, Any] | None, Any]:
    from ..compare.runs import run_row

    try:
        data = read_run(run_dir)
    except RunLogError:
        return None, None
    row = run_row(data, target)
    d = asdict(row)
    d.pop("order", None)
    return d, data


def _analyze(data: Any, target: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ..compare.advice import analyze_quietly
    from ..recommend.rules import rules_for

    analysis, _ = analyze_quietly(data, target)
    if analysis is None:
        return [], []
    findings = [{"kind": f.kind.value, "step": f.step, "metric": f.metric, "severity": f.severity,
                 "explanation": f.explanation} for f in analysis.findings if f.severity in ("warn", "fail")]
    advice = [asdict(r) for r in rules_for(analysis)]
    return findings, advice


#: Default run budget one run at a time; with N at once, ROUNDS_BUDGET rounds' worth (at least this).
DEFAULT_MAX_RUNS = 5
ROUNDS_BUDGET = 3


def tune(config_path: str | Path | None, target_l0: float, *, tolerance: float = 0.1, max_runs: int | None = None,
         out_dir: str | Path = "runs/tune", overrides: Sequence[str] = (), progress: ProgressFn | None = None,
         train_fn: Callable[..., Any] | None = None, trainer_progress: bool = False, analyze: bool = True,
         max_steps: int | None = None, devices: Sequence[str] = (), parallel: int | None = None) -> Campaign:
    """Run (or resume) a campaign; returns it with ``status`` set. Writes the campaign report after
    every run. ``train_fn`` defaults to ``trainer.train``. ``max_steps``: the most steps a run whose
    L0 still trends may be lengthened to (default ``MAX_STEPS_FACTOR`` x total_steps; equal to
    total_steps: never lengthen, stop and say how many steps are needed). ``devices`` /
    ``parallel``: train that many runs at once in child processes, one per device slot, as
    ``sae-report sweep`` does (each round: the recommendation and points across its interval);
    without them, one run at a time in this process. ``max_runs``: the run budget (default
    ``DEFAULT_MAX_RUNS``; with N at once, ``ROUNDS_BUDGET`` x N, at least that)."""
    from trainer.config import TrainConfig

    from ..sweep.pool import SlotError, device_slots

    if target_l0 >= 1:  # a count of features: the config's dictionary size makes it a fraction
        from trainer.loop import resolve_config

        d_sae = int(resolve_config(TrainConfig.from_yaml(config_path, list(overrides))).d_sae)  # type: ignore[arg-type]
        if target_l0 >= d_sae:
            raise TuneError(f"a target L0 of {target_l0:g} features is not below d_sae ({d_sae})")
        target_l0 = target_l0 / d_sae
    if not 0 < target_l0 < 1:
        raise TuneError(f"target L0 must be a fraction between 0 and 1, got {target_l0}")
    if not 0 < tolerance < 1:
        raise TuneError(f"tolerance must be between 0 and 1 (relative), got {tolerance}")
    if max_runs is not None and max_runs < 1:
        raise TuneError(f"max runs must be at least 1, got {max_runs}")
    base_cfg = TrainConfig.from_yaml(config_path, [*overrides, f"target_l0={target_l0}"])
    coefficient_of(base_cfg)  # TopK / BatchTopK: refused here, before anything is written
    if devices or (parallel or 1) > 1:
        try:
            runner: InProcess | Children = Children(device_slots(devices, parallel, base_cfg.threads))
        except SlotError as exc:
            raise TuneError(str(exc)) from None
    else:
        if train_fn is None:
            from trainer import train as train_fn  # noqa: PLW0127 - the real trainer
        runner = InProcess(train_fn, trainer_progress)
    if max_runs is None:  # several at once: enough for ROUNDS_BUDGET rounds
        max_runs = max(DEFAULT_MAX_RUNS, ROUNDS_BUDGET * runner.parallel)
    base = base_cfg.to_dict()
    if max_steps is None:
        max_steps = MAX_STEPS_FACTOR * base_cfg.total_steps
    if max_steps < base_cfg.total_steps:
        raise TuneError(f"--max-steps {max_steps:,} is below total_steps {base_cfg.total_steps:,}; "
                        "give at least total_steps (equal: never lengthen a run)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:  # one campaign at a time in a folder (a second one would train into the same runs)
        lock = lock_folder(out)
    except LockHeldError as exc:
        raise TuneError(str(exc)) from None
    try:
        sweep_temp_files(out)  # campaign.json temp files a killed campaign left
        return _tune_locked(out, base_cfg, base, target_l0, tolerance, max_runs, progress, runner, analyze,
                            max_steps)
    finally:
        lock.release()


def _tune_locked(out: Path, base_cfg: Any, base: dict[str, Any], target_l0: float, tolerance: float, max_runs: int,
                 progress: ProgressFn | None, runner: "InProcess | Children", analyze: bool,
                 max_steps: int) -> Campaign:
    state = load_state(out)
    check_same_campaign(out, state, base, target_l0)
    camp = Campaign(out_dir=out, target_l0=target_l0, tolerance=tolerance, max_runs=max_runs, base_config=base,
                    total_steps=int(base_cfg.total_steps), max_steps=int(max_steps), coefficient=coefficient_of(base_cfg),
                    parallel=runner.parallel, where=runner.where)
    # a campaign that lengthened its runs goes on at that length
    camp.total_steps = max(camp.total_steps, _steps((state or {}).get("total_steps")))
    notify = progress or (lambda *_: None)
    _restore(camp, state)
    try:
        while True:
            _finish_pending(camp, base_cfg, runner, notify, analyze)
            if camp.status != "running":
                break
            if _decide(camp, notify):
                break
            plan_round(camp, float(getattr(base_cfg, camp.coefficient)), notify)
            save_state(camp)
    except KeyboardInterrupt:
        camp.status = "interrupted"
        camp.message = "Interrupted: run the same command again to resume from the last checkpoint."
        raise
    finally:
        _choose_best(camp)
        save_state(camp)
        problem = _write_report(camp)
        if problem:
            camp.message += f" (campaign report not written: {problem})"
    return camp


def _write_report(camp: Campaign) -> str:
    """Write the campaign report; the problem in one line ("" when written)."""
    from ..report.campaign import write_campaign_report

    _choose_best(camp)
    try:
        write_campaign_report(camp)
    except Exception as exc:  # the runs are safe on disk; say why the report is missing
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ""


def _restore(camp: Campaign, state: dict[str, Any] | None) -> None:
    """Iterations from campaign.json, plus run directories it does not know (e.g. copied in)."""
    known: list[Iteration] = []
    for d in (state or {}).get("iterations", []):
        it = Iteration(**{k: v for k, v in d.items() if k in Iteration.__dataclass_fields__})
        known.append(it)
    names = {it.run_id for it in known}
    for p in sorted(camp.out_dir.iterdir()):
        if p.is_dir() and is_run_dir(p) and p.name not in names and re.match(r"iter_\d+_", p.name):
            try:
                l1 = float(read_run(p).config.get(camp.coefficient))
            except (RunLogError, TypeError, ValueError):
                continue
            summary = p / "summary.json"
            done = summary.exists() and '"completed"' in summary.read_text(errors="replace")
            known.append(Iteration(index=len(known) + 1, run_id=p.name, l1_alpha=l1, why="Found in the campaign folder.",
                                   status="completed" if done else "interrupted"))
    for it in known:
        if it.status == "completed" or it.status == "diverged":
            it.reused = True
        if not it.total_steps:  # a campaign.json written before runs had a length of their own
            it.total_steps = _steps(((it.row or {}).get("config") or {}).get("total_steps")) or camp.total_steps
    camp.iterations = sorted(known, key=lambda i: i.index)


#: Iteration statuses that still need training.
PENDING = ("planned", "interrupted", "failed", "running", "lengthening")


def _finish_pending(camp: Campaign, base_cfg: Any, runner: "InProcess | Children", notify: ProgressFn,
                    analyze: bool) -> None:
    """Train every planned, interrupted or lengthened iteration (resuming from disk; ``runner``
    trains them one at a time or one per device slot at once), read their results, and lengthen a
    run whose L0 still trends (up to ``camp.max_steps``), until none is pending."""
    while True:
        jobs = [_job(camp, base_cfg, it) for it in camp.iterations if it.status in PENDING]
        failed: list[Iteration] = []
        if jobs:
            try:
                runner.train(jobs, camp.out_dir, lambda job: _started(camp, job.it, notify),
                             lambda job: save_state(camp))
            finally:
                save_state(camp)
            if any(job.it.status == "interrupted" for job in jobs):  # the checkpoints hold the runs: resumed as is
                camp.status = "interrupted"
                camp.message = "Interrupted: run the same command again to resume from the last checkpoint."
                save_state(camp)
                return
            failed = [job.it for job in jobs if job.it.status == "failed"]
            for job in jobs:
                job.it.reused = False
        for it in camp.iterations:
            if it.row is None or not it.reused or "drifting" not in it.row:
                if it.status == "failed":
                    continue
                _read_results(camp, it, camp.out_dir / it.run_id, analyze)
                notify("done", camp, it)
                it.reused = True
                save_state(camp)
                _write_report(camp)  # readable mid-campaign; charts already drawn are reused
        if failed:
            camp.status = "failed"
            camp.message = "Training failed: " + "; ".join(f"{it.run_id}: {it.error}" for it in failed) + \
                ". Run the same command again to retry."
            save_state(camp)
            it = failed[0]
            more = f" (and {len(failed) - 1} more: see campaign.md)" if len(failed) > 1 else ""
            raise TuneError(f"{it.run_id}: training failed: {it.error}{more}; run the same command again to retry it")
        if not [it for it in camp.iterations if _lengthen(camp, it, notify)]:
            return


def _job(camp: Campaign, base_cfg: Any, it: Iteration) -> Job:
    """What training ``it`` means now: its config, and its checkpoint to resume (a run stopped before
    its first checkpoint, or one whose schedules cannot be lengthened, is set aside, trained afresh)."""
    run_dir = camp.out_dir / it.run_id
    if run_dir.exists():
        try:  # a writer still at work there (a child of a campaign killed with -9): not touched
            lock_folder(run_dir).release()
        except LockHeldError as exc:
            raise TuneError(f"{it.run_id}: {exc}; wait for it to finish (or stop it), then run the same command "
                            "again") from None
    if not it.total_steps:
        it.total_steps = camp.total_steps
    cfg = config_for(base_cfg, it.l1_alpha, it.total_steps, camp.coefficient)
    resume = run_dir if run_dir.exists() and any((run_dir / "checkpoints").glob("*")) else None
    if resume is not None and it.status == "lengthening" and not resumable_longer(cfg):
        _set_aside(run_dir, "short")  # a schedule tied to total_steps: a longer run starts afresh
        resume = None
    if resume is None and (run_dir / "metrics").exists():
        _set_aside(run_dir)  # stopped before its first checkpoint: keep it, start the run afresh
    return Job(it, cfg, run_dir, resume)


def _started(camp: Campaign, it: Iteration, notify: ProgressFn) -> None:
    notify("start", camp, it)
    save_state(camp)


def _read_results(camp: Campaign, it: Iteration, run_dir: Path, analyze: bool) -> None:
    """The run's row, findings and whether its L0 settled (within tolerance only when settled)."""
    row, data = _row_of(run_dir, camp.target_l0)
    it.row = row
    it.findings, it.advice = [], []
    if row is not None:
        if row.get("status") == "diverged" or (row.get("excluded") or "").startswith("diverged"):
            it.status = "diverged"
        if analyze and data is not None:
            it.findings, it.advice = _analyze(data, camp.target_l0)
    it.unsettled, it.lengthen = unsettled(row, it.findings, camp.target_l0, camp.tolerance)
    it.within = (row is not None and row.get("excluded") is None and not it.unsettled
                 and _within(row.get("settled_l0"), camp.target_l0, camp.tolerance))


def unsettled(row: dict[str, Any] | None, findings: Sequence[dict[str, Any]] = (), target: float | None = None,
              tolerance: float = 0.0) -> tuple[str, bool]:
    """Why a run's L0 has not settled ("" when it has), and whether lengthening it is worth it (a
    trend: ``settled_level``'s drift or the analyzer's ``not_converged`` on L0) or not (a swing; or,
    given the ``target`` and ``tolerance``, a trend that starts and ends on one side of the target's
    band and moves away from it: more steps cannot bring it to the target, and its side is known)."""
    if not row or row.get("excluded") is not None or not row.get("settled_l0"):
        return "", False
    trend = row.get("second_half_trend") or [None, None]
    if row.get("drifting") and trend[0] and trend[1]:
        word = "falling" if trend[1] < trend[0] else "rising"
        why = (f"L0 still {word} through the second half ({100 * trend[0]:.3g}% -> {100 * trend[1]:.3g}%, "
               "medians of its first and last fifth)")
        if target:
            low, high = target * (1 - tolerance), target * (1 + tolerance)
            below = word == "falling" and trend[0] < low and trend[1] < low
            above = word == "rising" and trend[0] > high and trend[1] > high
            if below or above:
                return (f"{why}, already {'below' if below else 'above'} the target and moving away from it, so "
                        "more steps would not reach it (not lengthened)"), False
        return why, True
    if row.get("drifting"):
        return "L0 still drifting through the second half", True
    for f in findings:
        if f.get("kind") == "not_converged" and f.get("metric") in L0_METRICS:
            return f"not converged: {str(f.get('explanation', '')).split('. It has not')[0].rstrip('.')}", True
    if row.get("unstable"):
        why = next((w for w in row.get("warnings") or [] if w.startswith("L0 not settled")), "L0 not settled")
        return why.replace("L0 not settled: ", "L0 swings: ", 1), False
    return "", False


def resumable_longer(cfg: Any) -> bool:
    """Whether a finished run can be resumed to more steps and be the run a longer config trains
    (False when the learning-rate decay is placed by total_steps). ``cfg``: a TrainConfig or a dict."""
    schedule = cfg.get("lr_schedule") if isinstance(cfg, dict) else getattr(cfg, "lr_schedule", None)
    return schedule not in ("cosine", "linear")


def _lengthen(camp: Campaign, it: Iteration, notify: ProgressFn) -> bool:
    """Plan a longer run for an iteration whose L0 still trends; True when it is to be trained again."""
    if not (it.unsettled and it.lengthen and it.status == "completed"):
        return False
    done = _steps((it.row or {}).get("steps")) or int(it.total_steps or camp.total_steps)
    done = max(done, int(it.total_steps or 0))
    if done >= camp.max_steps:
        return False
    new = min(camp.max_steps, max(_round_steps(LENGTHEN_FACTOR * done), done + 1))
    resumed = resumable_longer(camp.base_config)
    it.lengthened.append({"from": done, "to": new, "why": it.unsettled, "resumed": resumed})
    it.total_steps = new
    camp.total_steps = max(camp.total_steps, new)
    it.status = "lengthening"
    it.within = False
    notify("lengthen", camp, it)
    save_state(camp)
    return True


def _set_aside(run_dir: Path, tag: str = "partial") -> Path:
    """Rename a run that cannot be resumed to ``<name>.<tag>-N`` (nothing is deleted)."""
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.{tag}-{n}")).exists():
        n += 1
    run_dir.rename(target)
    return target


def _points(camp: Campaign) -> list[Any]:
    from ..recommend.fit import RunPoint

    pts = []
    for it in camp.iterations:
        r = it.row or {}
        if r.get("excluded") is None and r.get("settled_l0"):
            pts.append(RunPoint(it.run_id, float(it.l1_alpha), float(r["settled_l0"]), float(r.get("l0_noise") or 0.0)))
    return pts


def _decide(camp: Campaign, notify: ProgressFn) -> bool:
    """Set the final status when the campaign is over; True to stop."""
    from ..recommend.fit import recommend_l1

    if any(it.within for it in camp.iterations):
        camp.status = "reached"
        camp.message = (f"Reached the target: settled L0 within {100 * camp.tolerance:.3g}% of "
                        f"{100 * camp.target_l0:.3g}% after {len(camp.iterations)} run(s)." + _length_note(camp))
        notify("end", camp, None)
        return True
    short = [it for it in camp.iterations if it.unsettled and it.lengthen and it.status == "completed"]
    if short:  # still trending at the limit (else it would have been lengthened): no answer at this length
        it = short[-1]
        steps = max(_steps((it.row or {}).get("steps")), int(it.total_steps or 0))
        need = _round_steps(LENGTHEN_FACTOR * steps)
        camp.status = "unsettled"
        camp.message = (f"Stopped: L0 had not settled after {steps:,} steps in {it.run_id} ({it.unsettled}), "
                        f"so its L0 is not an answer. total_steps {steps:,} is too short to settle: allow at least "
                        f"{need:,} steps (rerun with --max-steps {need}; the runs on disk are resumed).")
        notify("end", camp, None)
        return True
    pts = _points(camp)
    rec = recommend_l1(pts, camp.target_l0, camp.coefficient) if pts else None
    camp.next_recommendation = rec.to_dict() if rec else None
    if len(camp.iterations) >= camp.max_runs:
        camp.status = "budget_spent"
        camp.message = (f"Run budget spent ({camp.max_runs} runs) without a settled L0 within "
                        f"{100 * camp.tolerance:.3g}% of the target"
                        + (f"; the next run should use {camp.coefficient} {rec.l1_alpha:.3g}." if rec else ".")
                        + _length_note(camp))
        notify("end", camp, None)
        return True
    if rec is not None and any(math.isclose(rec.l1_alpha, it.l1_alpha, rel_tol=0.005) for it in camp.iterations):
        camp.status = "saturated" if rec.saturated else "stuck"
        camp.message = (f"The fit recommends {camp.coefficient} {rec.l1_alpha:.3g} again, which was already run: "
                        + (f"L0 no longer responds to {camp.coefficient}. " if rec.saturated else "the runs are too noisy to "
                           "refine further. ") + " ".join(rec.warnings[:1]))
        notify("end", camp, None)
        return True
    if pts == [] and camp.iterations:
        camp.status = "failed"
        camp.message = "No run produced a usable settled L0 (" + "; ".join(
            f"{it.run_id}: {(it.row or {}).get('excluded') or it.status}" for it in camp.iterations) + ")."
        notify("end", camp, None)
        return True
    return False


def _length_note(camp: Campaign) -> str:
    configured = _steps(camp.base_config.get("total_steps"))
    if configured and camp.total_steps > configured:
        return (f" total_steps was raised from {configured:,} to {camp.total_steps:,}: {configured:,} steps were too "
                "short for L0 to settle.")
    return ""


def _choose_best(camp: Campaign) -> None:
    """The settled run nearest the target; None when no run settled (an unsettled run is never the
    answer)."""
    best, score = None, math.inf
    for it in camp.iterations:
        r = it.row or {}
        s = r.get("settled_l0")
        if r.get("excluded") is None and s and s > 0 and not it.unsettled and it.status == "completed":
            d = abs(math.log(s / camp.target_l0))
            if d < score:
                best, score = it.run_id, d
    camp.best = best
