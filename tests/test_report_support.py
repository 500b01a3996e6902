"""Shared helpers for the report tests (no tests here): a hand-built Analysis of the write-up's run.

The Analysis is built by hand with the write-up's numbers (train_e01c6183), so the report tests do
not depend on the detectors; the run data come from ``sae_report.fixtures`` (fixed seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_report.analysis.result import (Analysis, Finding, FindingKind, Intervention, MetricSummary, Phase,
                                        Recommendation, ResampleRecord, RunInfo, Skipped, StepRow, Target)
from sae_report.fixtures import write_run
from sae_report.runlog import RunData, read_run

K = FindingKind

# The write-up's step table: step -> (L0 fraction, dead count, annotation).
WRITEUP_ROWS = [
    (0, 0.504, 125, "<- Initial random state"), (10_000, 0.034, 1835, "<- Rapid decay"),
    (20_000, 0.007, 7646, "<- Complete collapse"), (30_000, 0.011, 7536, "<- Slow recovery"),
    (40_000, 0.030, 6963, "<- Improving"), (50_000, 0.022, 6963, "<- Stabilizing"),
    (60_000, 0.018, 7209, ""), (70_000, 0.024, 7291, ""), (80_000, 0.025, 6390, ""),
    (90_000, 0.0466, 5980, "<- Best performance"), (100_000, 0.0218, 7324, "<- Final (collapsed again)"),
]
D_SAE = 8192


def writeup_analysis(run_id: str = "train_e01c6183", config: dict[str, Any] | None = None,
                     recommendations: bool = True, **run_kw: Any) -> Analysis:
    """The write-up's analysis, by hand (numbers from 002_*.txt)."""
    config = config if config is not None else {"l1_alpha": 0.065, "learning_rate": 0.0001, "resample_interval": 10000,
                                                 "target_l0": 0.05, "total_steps": 100000, "d_sae": D_SAE}
    rows = [StepRow(step=s, values={"l0_frac": l0, "dead": float(d), "dead_frac": d / D_SAE}, annotation=a)
            for s, l0, d, a in WRITEUP_ROWS]
    findings = [
        Finding(K.SPARSIFICATION, "l0_frac", 0, 10_000, "info", {"from": 0.504, "to": 0.034, "ratio": 14.8}, None,
                "L0 fell from 50.4% to 3.4% as the SAE became sparse."),
        Finding(K.COLLAPSE, "l0_frac", 10_000, 20_000, "warn", {"from": 0.034, "to": 0.007, "dead_frac": 0.93,
                "settled": 0.0225}, None, "L0 undershot to 0.7%, far below the 2.2% the run settles at, with 93% of features dead."),
        Finding(K.RECOVERY, "l0_frac", 20_000, 50_000, "info", {"from": 0.007, "to": 0.022}, Intervention("resample", 20_000),
                "L0 climbed back from 0.7% to 2.2% but never held above 3%."),
        Finding(K.OSCILLATION, "l0_frac", 50_000, 100_000, "warn", {"mean": 0.0225, "std": 0.0106}, None,
                "L0 swings between 1.8% and 4.7% instead of settling."),
        Finding(K.LATE_SPIKE, "l0_frac", 90_000, 92_000, "warn", {"peak": 0.0466, "pct_of_target": 93.2, "final": 0.0218},
                Intervention("resample", 90_000), "L0 reached 4.66% (93% of target) right after the resample at 90K, then fell back to 2.18%."),
        Finding(K.RESAMPLE_THRASH, "dead_frac", 10_000, 100_000, "warn", {"median_survival_steps": 3000,
                "resample_interval": 10000}, None, "Revived features die within ~3K steps, before the next resample."),
    ]
    resampling = [ResampleRecord(step=s, n_resampled=n, dead_before=b, dead_after=a, revived_survival_steps=3000.0)
                  for s, n, b, a in ((10_000, 328, 0.22, 0.18), (20_000, 492, 0.93, 0.87), (90_000, 1229, 0.88, 0.73))]
    recs = [Recommendation("l1_alpha", 0.065, 0.045, 0.04, 0.047,
                           "L0 is 44% of target; the runs at 0.05 (4.19%) and 0.065 (2.18%) bracket a lower value.",
                           "final L0 4.8-5.2%"),
            Recommendation("resample_interval", 10000, 15000, None, None,
                           "Revived features die before the next resample at 10K.", "fewer dead features (75-80%)")]
    return Analysis(
        run=RunInfo(id=run_id, path=f"runs/{run_id}", config=config, source="sae-report", rows=2001, first_step=0,
                    last_step=100_000, sampled=False, d_sae=D_SAE, notes=[], **run_kw),
        summary={"l0_frac": MetricSummary("l0_frac", 0.0218, 0.0225, 0.0106, 0.0223, 0.0466, 90_000),
                 "dead_frac": MetricSummary("dead_frac", 0.894, 0.87, 0.03, 0.88, 0.73, 90_000)},
        step_table=rows,
        targets=[Target("Final L0 Sparsity", 0.0218, 0.05, 43.6, "warn", "5.0%"),
                 Target("Second Half Avg L0", 0.0225, 0.05, 45.0, "warn", "5.0%"),
                 Target("Dead Neurons", 0.894, 0.75, None, "fail", "<75%"),
                 Target("Final Loss", 0.01137, 0.02, None, "ok", "<0.02"),
                 Target("Duration", 1044.0, 1020.0, None, "ok", "~17 min")],
        phases=[Phase("Initial Collapse", "l0_frac", 0, 20_000), Phase("Recovery & Instability", "l0_frac", 20_000, 50_000),
                Phase("Oscillation with Late Spike", "l0_frac", 50_000, 100_000)],
        findings=findings,
        resampling=resampling,
        input_outliers=[],
        recommendations=recs if recommendations else [],
        skipped=[Skipped("input outliers", "no stats/input_dims.csv in the run")],
    )


def writeup_data(tmp_path: Path, *, rows: int = 1000, with_stats: bool = False, **kw: Any) -> RunData:
    """The write-up scenario's run data (fixed seed), written and read back."""
    run = write_run(tmp_path, "writeup", steps=100_000, seed=0, rows=rows, with_stats=with_stats, **kw)
    return read_run(run.run_dir)


def comparison() -> dict[str, Any]:
    """The write-up's three-training comparison as plain data (the recommender's shape)."""
    rows = [
        {"id": "train_0314574b", "l1_alpha": 0.005, "resample_interval": 15000, "final_l0": 0.1129, "pct_of_target": 225.8,
         "second_half_mean_l0": 0.115, "dead_frac": 0.72, "final_loss": 0.0093, "duration_s": 1014.0},
        {"id": "train_05555a4b", "l1_alpha": 0.05, "resample_interval": 15000, "final_l0": 0.0419, "pct_of_target": 83.8,
         "second_half_mean_l0": 0.0262, "dead_frac": 0.77, "final_loss": 0.0115, "duration_s": 1020.0},
        {"id": "train_e01c6183", "l1_alpha": 0.065, "resample_interval": 10000, "final_l0": 0.0218, "pct_of_target": 43.6,
         "second_half_mean_l0": 0.0225, "dead_frac": 0.89, "final_loss": 0.01137, "duration_s": 1044.0},
    ]
    return {"rows": rows, "key_finding": "Raising l1_alpha from 0.05 to 0.065 lowered L0 from 4.19% to 2.18%: "
            "raise l1_alpha -> fewer active features -> lower L0.",
            "warnings": ["resample_interval differs between runs (15K vs 10K): a confounder for the dead-feature comparison."]}
