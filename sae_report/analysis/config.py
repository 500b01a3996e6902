"""Every threshold the analyzer uses, in one frozen dataclass.

Spans and windows are FRACTIONS OF THE RUN (the logged step range), never absolute steps, so the
same settings judge a 1K-step run and a 200M-step run alike. L0 and loss are judged on a log scale
(a fall from 50% to 5% is the same size as one from 5% to 0.5%); dead fractions on a linear scale.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class AnalyzerConfig:
    """Thresholds of the detectors, summary and targets table."""

    bins: int = 500
    """The series is reduced to at most this many equal-width step bins (median per bin) before
    the shape detectors run: noise-robust, and 10M logged rows cost the same as 500."""
    smooth_frac: float = 0.01
    """Width of the rolling median applied to the binned series (fraction of the run)."""

    sparsification_ratio: float = 3.0
    """L0 falling from its start by at least this factor is reported as sparsification (info)."""
    collapse_undershoot: float = 2.5
    """Collapse: the L0 trough lies at least this factor below the level the run settles at
    (median of the second half) and below the target, when one is known."""
    collapse_recover_ratio: float = 1.5
    """Collapse also needs L0 to climb back after the trough: the median after it is at least this
    factor above the trough (otherwise the trough is just the latest, lowest point)."""
    collapse_dead_surge: float = 0.5
    """Dead features surging by at least this fraction of the dictionary ..."""
    collapse_dead_level: float = 0.8
    """... up to at least this fraction, within ``collapse_dead_span`` of the run, is a collapse."""
    collapse_dead_span: float = 0.15
    """Window for the dead-feature surge (fraction of the run)."""
    recovery_ratio: float = 2.0
    """Recovery: after a collapse, L0 climbs back to at least this factor above the trough."""
    broken_l0: float = 1.0
    """An SAE whose median L0 over the end of the run is below this many active features per token
    has collapsed, whatever path it took there (most tokens are reconstructed by no feature)."""
    broken_ev: float = 0.1
    """... as has one whose median explained variance there is below this (it reconstructs nothing)."""
    broken_tail: float = 0.2
    """The end of the run those medians are taken over (fraction of the run)."""

    dormancy_min_span: float = 0.03
    """Dormancy: the metric stays at its start value for at least this fraction of the run."""
    dormancy_tol: float = 0.02
    """... within this fraction of the metric's range over the run."""

    plateau_min_span: float = 0.15
    """Plateau: flat for at least this fraction of the run ..."""
    plateau_tol: float = 0.06
    """... with the smoothed metric moving less than this fraction of its range over the run."""
    secondary_rise_min: float = 0.08
    """Secondary rise: after a plateau the metric climbs again by at least this fraction of its
    range, and ends above the plateau."""

    osc_window: float = 0.1
    """Oscillation: detrending window (rolling median) and the window the swing is measured in."""
    osc_min_amp_log: float = 0.15
    """Minimum robust std of the detrended L0/loss (natural log units; 0.15 is about +-16%)."""
    osc_min_amp_lin: float = 0.02
    """Minimum robust std of the detrended dead fraction (fraction of the dictionary)."""
    osc_noise_mult: float = 2.0
    """The swing must also be this many times the point-to-point noise (white noise is not
    oscillation)."""
    osc_min_span: float = 0.15
    """Oscillation must last at least this fraction of the run ..."""
    osc_min_crossings: int = 6
    """... and cross its trend at least this many times (an elbow in a curve crosses once)."""

    late_frac: float = 0.25
    """A late spike starts in the last part of the run of this size."""
    spike_baseline: float = 0.1
    """Trailing window (excluding the judged point) the spike is measured against."""
    spike_min_log: float = 0.4
    """Minimum excursion from the trailing baseline for L0/loss (natural log; 0.4 is about 1.5x)."""
    spike_min_lin: float = 0.05
    """Minimum excursion for the dead fraction."""
    spike_band_mult: float = 1.5
    """The excursion must also be this many times the half-width of the trailing 5-95% band."""
    spike_noise_z: float = 3.5
    """... and this many times the curve's point-to-point noise (so noise over thousands of points
    does not produce one by chance) ..."""
    spike_min_features: float = 0.5
    """... and, for L0, at least this many active features per token away from the baseline
    (quantised jitter of a tiny L0 is not a spike) ..."""
    spike_min_bins: int = 2
    """Persistence rule: the excursion must hold for at least this many consecutive bins (the
    first over the threshold, the following ones over half of it; a lone logged point is a glitch,
    not a spike) ..."""
    spike_max_span: float = 0.05
    """... and come back within this fraction of the run (else it is a level shift, not a spike)."""

    converge_window: float = 0.2
    """Not converged: the trend over the last part of the run of this size ..."""
    converge_min_log: float = 0.15
    """... changes L0/loss by at least this much (natural log) ..."""
    converge_min_lin: float = 0.05
    """... or the dead fraction by at least this much ..."""
    converge_noise_mult: float = 3.0
    """... and by this many standard errors of the medians compared."""

    diverge_factor: float = 10.0
    """Diverged: loss rises to this factor above its running minimum and stays there, or turns
    non-finite."""
    diverge_onset_factor: float = 3.0
    """The divergence is dated where the loss first exceeds this factor of its running minimum."""

    thrash_min_drop: float = 0.02
    """A resample counts when the dead fraction drops by at least this much after it."""
    thrash_share: float = 0.5
    """Resample thrash: at least this share of the measurable resamples saw their revived features
    die again (half the drop undone) before the next resample ..."""
    thrash_min_events: int = 2
    """... over at least this many resamples."""

    coincide_frac: float = 0.05
    """An intervention (resample, lr/l1 change, resume) at most this fraction of the run before a
    finding's start is named in ``coincides_with``."""

    topk_dead_warn: float = 0.1
    """Dead latents (TopK / BatchTopK): at least this share of the dictionary dead over the last fifth of
    the second half (median) ..."""
    topk_dead_falling: float = 0.1
    """... and not falling by this share of itself since the first fifth of the second half (falling:
    AuxK is reviving them, no finding)."""
    dense_report: float = 1.0
    """Dense latents: a run ending with at least this many features firing on more than 10% of
    tokens (``dense_features``) gets a finding (info) ..."""
    dense_warn: float = 10.0
    """... a warning from this many on."""
    dense_mean_ratio: float = 10.0
    """... and only when a tenth of the tokens is at least this many times the average feature's firing
    rate (the settled L0 as a share of the dictionary): with d_sae 512 and L0 20 (3.9%) features above
    a tenth are the data's busy features, with d_sae 16,384 and L0 50 (0.3%) they are dense latents."""
    dense_onset_share: float = 0.5
    """"Since when": the first step, after the count's low point, with the count above this share of
    its final value."""
    dense_growth: float = 1.25
    """Growing: the median count over the last quarter of the judged span is at least this factor
    above the median over the first quarter of its second half (and at least one feature more)."""

    ultra_low_share: float = 0.1
    """Ultra-low density: at least this share of the dictionary fires on fewer than 1e-5 of tokens
    (``density_below_1e-5``; ``density_below_1e-6`` when only that is logged) at the end."""
    ultra_low_jump: float = 0.01
    """Resampling feeds the cluster when the share rises by at least this much (median over the
    resamples) from the last value logged before a resample to the first one logged after it."""

    shrinkage_max: float = 0.9
    """Shrinkage: the median ``l2_ratio`` (||x_hat|| / ||x||) over the second half is below this."""
    shrinkage_track_min: float = 0.01
    """l2_ratio "tracks" an l1_alpha change when its median moves by at least this much across the
    change, in the opposite direction to l1_alpha."""
    shrinkage_track_window: float = 0.1
    """Window each side of an l1_alpha change the two medians are taken over (fraction of the run)."""

    spliced_min: float = 0.85
    """Poor spliced-in loss: the median ``ce_loss_score`` over the second half (the last logged value
    when none falls there) is below this share of the loss gap recovered."""

    target_ok_band: tuple[float, float] = (0.8, 1.25)
    """L0 result / target within this band: ok."""
    target_warn_band: tuple[float, float] = (0.4, 2.5)
    """Within this band: warn; outside: fail."""
    dead_target: float = 0.75
    """Dead fraction target (the write-up's "<75%"): below is ok ..."""
    dead_warn_margin: float = 0.1
    """... up to this much above it is warn, beyond is fail."""
    outlier_ratio: float = 10.0
    """An input dimension whose max |activation| exceeds this factor of the median dimension's is
    an outlier."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not v > 0:
                raise ValueError(f"AnalyzerConfig.{f.name} must be positive (got {v})")
        if self.bins < 20:
            raise ValueError("AnalyzerConfig.bins must be at least 20")
        for name in ("late_frac", "spike_baseline", "spike_max_span", "converge_window", "plateau_min_span",
                     "osc_window", "osc_min_span", "coincide_frac", "dormancy_min_span", "smooth_frac",
                     "broken_tail", "dense_onset_share", "ultra_low_share", "shrinkage_track_window"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"AnalyzerConfig.{name} must be a fraction of the run in (0, 1)")
        lo, hi = self.target_ok_band
        wlo, whi = self.target_warn_band
        if not (0 < wlo <= lo < 1 < hi <= whi):
            raise ValueError("AnalyzerConfig target bands must nest: warn_lo <= ok_lo < 1 < ok_hi <= warn_hi")
