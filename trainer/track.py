"""SAE-Track training: one SAE per model checkpoint, each initialised from the previous one.

``train_series(acts, out, TrackConfig(...))``:

- SAE 0 trains from scratch on checkpoint 0's activations for the full budget (``base.total_steps``).
- SAE k (k >= 1) starts from SAE k-1's final weights (``init_from``; Adam state too with
  ``init_optimizer``) and trains on checkpoint k's activations for ``fraction`` of the budget.
- Each control checkpoint (default: the last) also gets a from-scratch SAE with the full budget,
  on the same activations and settings (another seed): the speed-up and the independent matching
  compare to it; and a probe: the series' recurrent SAE there continued to ``probe_fraction`` of
  the budget, so the tokens it needs are measured even when they exceed ``fraction``.

Every SAE is an ordinary run directory (``OUT/sae_00``, ..., ``OUT/fresh_07``) that ``sae-report
analyze`` reads; ``OUT/track/series.json`` lists them. A run already complete with the same
settings (``OUT/track/runs.json`` keeps each run's settings hash) is reused, so a second call only
re-analyses.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sae_report.runlog import atomic_write_text
from sae_report.runlog.track_manifest import MANIFEST_FILE, TRACK_DIR, SeriesEntry, SeriesManifest, write_manifest

RUNS_FILE = "runs.json"

#: Settings of the recurrent runs that differ from the first SAE's: a warm start needs no warm-up.
RECURRENT_OVERRIDES: dict[str, Any] = {"l1_warmup_steps": 0, "lr_warmup_steps": 0}


@dataclass(frozen=True)
class TrackConfig:
    """How the series is trained."""

    base: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig values shared by every SAE (``total_steps`` is the full budget of the first
    SAE and of the controls). ``data_source``/``data_path``/``init_from`` are set per run."""
    fraction: float = 0.05
    """Budget of each recurrently initialised SAE as a fraction of the full budget (paper: < 1/20)."""
    controls: tuple[int, ...] | None = None
    """Checkpoint indices that also get a from-scratch control (None: the last; () for none).
    Negative indices count from the end. A control uses seed ``seed + 1000 + index``."""
    init_optimizer: bool = False
    """Recurrent SAEs also load the previous SAE's Adam state."""
    probe_fraction: float | None = 0.25
    """At each control checkpoint, also continue the recurrent SAE (same start, seed and data
    order, so its first steps are the series' run when the lr schedule does not depend on
    total_steps) to this fraction of the budget: the speed-up is read on it, so tokens beyond
    ``fraction`` are observed rather than cut off. None (or not above ``fraction``): no probes."""
    threshold: float = 0.9
    """Decoder cosine at or above which two features count as matched (stored in the manifest)."""
    labels: tuple[str, ...] | None = None
    """Names of the checkpoints in the report (None: the activation file names)."""
    source: Mapping[str, Any] = field(default_factory=dict)
    """Description of where the activations came from (written into the manifest)."""

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.probe_fraction is not None and not 0 < self.probe_fraction <= 1:
            raise ValueError(f"probe_fraction must be in (0, 1], got {self.probe_fraction}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        for key in ("data_source", "data_path", "init_from", "init_optimizer"):
            if key in self.base:
                raise ValueError(f"base: {key} is set per run by the track trainer")


@dataclass(frozen=True)
class TrackTraining:
    """What ``train_series`` did."""

    out: Path
    """The output folder."""
    manifest_path: Path
    """``OUT/track/series.json``."""
    manifest: SeriesManifest
    """The series as written."""
    trained: list[str] = field(default_factory=list)
    """Run directories trained in this call."""
    reused: list[str] = field(default_factory=list)
    """Run directories reused from an earlier call."""
    elapsed_s: float = 0.0
    """Wall-clock seconds."""


def _label(path: Path) -> str:
    """``step_000001500/activations.npy`` -> ``step_000001500``; else the file name."""
    return path.parent.name if path.name == "activations.npy" else path.name


def resolve_controls(controls: Sequence[int] | None, n: int) -> list[int]:
    """Control indices as sorted non-negative positions; checkpoint 0 has its own fresh SAE."""
    raw = [n - 1] if controls is None else list(controls)
    out = sorted({c + n if c < 0 else c for c in raw})
    bad = [c for c in out if not 0 < c < n]
    if bad:
        raise ValueError(f"control checkpoint {bad[0]} is outside 1..{n - 1} (checkpoint 0 is trained from scratch anyway)")
    return out


def train_series(acts: Sequence[Path | str], out: Path | str, config: TrackConfig | None = None, *,
                 log: Callable[[str], None] | None = None) -> TrackTraining:
    """Train (or reuse) the series and its controls; write ``OUT/track/series.json``."""
    from .config import TrainConfig
    from .loop import train

    config = config or TrackConfig()
    acts = [Path(a).resolve() for a in acts]
    if len(acts) < 2:
        raise ValueError("a track series needs at least two activation sources (one per checkpoint)")
    out = Path(out)
    (out / TRACK_DIR).mkdir(parents=True, exist_ok=True)
    labels = list(config.labels) if config.labels else [_label(a) for a in acts]
    if len(labels) != len(acts):
        raise ValueError(f"{len(labels)} labels for {len(acts)} activation sources")
    controls = resolve_controls(config.controls, len(acts))
    base = TrainConfig.from_dict({**config.base, "data_source": "files", "data_path": str(acts[0])}, source="track")
    full = base.total_steps
    short = max(1, round(full * config.fraction))
    runs_file = out / TRACK_DIR / RUNS_FILE
    known: dict[str, str] = json.loads(runs_file.read_text()) if runs_file.exists() else {}
    t0 = time.perf_counter()
    trained, reused = [], []

    def run(name: str, cfg: TrainConfig, what: str) -> Path:
        run_dir = out / name
        key = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
        if known.get(name) == key and _complete(run_dir):
            reused.append(str(run_dir))
            if log:
                log(f"{name}: reusing the completed run ({what})")
            return run_dir
        if log:
            log(f"{name}: training {what} ({cfg.total_steps:,} steps x {cfg.batch_size:,} tokens)")
        if run_dir.exists():
            if name not in known and any(run_dir.iterdir()):
                raise ValueError(f"{run_dir}: exists and was not written by this track series; choose another --out")
            import shutil

            shutil.rmtree(run_dir)  # a stale or half-written run of ours, with other settings
        known[name] = "training"  # ours from now on, even if interrupted (a rerun may replace it)
        atomic_write_text(runs_file, json.dumps(known, indent=2, sort_keys=True) + "\n")
        result = train(cfg, out, run_dir=run_dir)
        if result.status != "completed":
            raise RuntimeError(f"{run_dir}: training ended {result.status}")
        known[name] = key
        atomic_write_text(runs_file, json.dumps(known, indent=2, sort_keys=True) + "\n")
        trained.append(str(run_dir))
        return run_dir

    entries: list[SeriesEntry] = []
    recurrent_cfgs: dict[int, TrainConfig] = {}
    prev: Path | None = None
    for k, path in enumerate(acts):
        name = f"sae_{k:02d}"
        if prev is None:
            cfg = base.replace(data_path=str(path))
            what, init, steps = f"from scratch on {labels[k]}", "scratch", full
        else:
            warm = dict(RECURRENT_OVERRIDES)
            if base.l1_schedule == "warmup":
                warm["l1_schedule"] = "constant"
            if base.lr_schedule == "warmup":
                warm["lr_schedule"] = "constant"
            cfg = base.replace(**{**warm, "data_path": str(path), "total_steps": short,
                                  "init_from": str(prev), "init_optimizer": config.init_optimizer})
            what, init, steps = f"from {prev.name} on {labels[k]}", "recurrent", short
            recurrent_cfgs[k] = cfg
        prev = run(name, cfg, what)
        entries.append(SeriesEntry(index=k, label=labels[k], run_dir=prev, init=init,
                                   budget_tokens=steps * cfg.batch_size, acts=path))
    ctrl_entries = []
    for c in controls:
        name = f"fresh_{c:02d}"
        # Another seed: an independently trained SAE (own initialisation and data order), so the
        # matching by assignment measures agreement between independent runs, not a replay.
        ctrl_cfg = base.replace(data_path=str(acts[c]), seed=base.seed + 1000 + c)
        run_dir = run(name, ctrl_cfg, f"the from-scratch control on {labels[c]} (seed {ctrl_cfg.seed})")
        ctrl_entries.append(SeriesEntry(index=c, label=labels[c], run_dir=run_dir, init="scratch",
                                        budget_tokens=full * base.batch_size, acts=acts[c]))
    probe_entries = []
    if config.probe_fraction is not None and config.probe_fraction > config.fraction:
        long = max(short + 1, round(full * config.probe_fraction))
        for c in controls:
            cfg = recurrent_cfgs[c].replace(total_steps=long)
            run_dir = run(f"probe_{c:02d}", cfg, f"the recurrent SAE on {labels[c]} continued to {long:,} steps")
            probe_entries.append(SeriesEntry(index=c, label=labels[c], run_dir=run_dir, init="recurrent",
                                             budget_tokens=long * cfg.batch_size, acts=acts[c]))
    manifest = SeriesManifest(checkpoints=entries, controls=ctrl_entries, probes=probe_entries, fraction=config.fraction,
                              threshold=config.threshold,
                              source={**dict(config.source), "full_steps": full, "recurrent_steps": short,
                                      "probe_fraction": config.probe_fraction,
                                      "batch_size": base.batch_size, "init_optimizer": config.init_optimizer})
    path = out / TRACK_DIR / MANIFEST_FILE
    write_manifest(path, manifest)
    return TrackTraining(out=out, manifest_path=path, manifest=manifest, trained=trained, reused=reused,
                         elapsed_s=time.perf_counter() - t0)


def merge_base(defaults: Mapping[str, Any], config_path: Path | str | None = None, overrides: Sequence[str] = (),
               explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The series' shared TrainConfig values: ``defaults``, then the keys set in ``config_path``,
    then ``key=value`` overrides, then ``explicit`` values that are not None (command-line flags).
    Values are validated by ``TrainConfig``; per-run keys (data_path, init_from, ...) are dropped."""
    import yaml

    from .config import TrainConfig

    raw: dict[str, Any] = dict(defaults)
    if config_path is not None or overrides:
        user = TrainConfig.from_yaml(config_path, list(overrides))
        given = {o.split("=", 1)[0].strip() for o in overrides}
        if config_path is not None:
            given |= set((yaml.safe_load(Path(config_path).read_text()) or {}).keys())
        raw.update({k: v for k, v in user.to_dict().items() if k in given})
    raw.update({k: v for k, v in (explicit or {}).items() if v is not None})
    for key in ("data_source", "data_path", "init_from", "init_optimizer"):
        raw.pop(key, None)
    return raw


def builtin_inputs(lm_config, cache_dir: Path | str | None = None, *,
                   log: Callable[[str], None] | None = None) -> tuple[list[Path], tuple[str, ...], dict[str, Any]]:
    """Build (or reuse) the built-in LM series: activation files, labels, and the source description."""
    from .lm import build_lm_series

    series = build_lm_series(lm_config, cache_dir, log=log)
    source = {"kind": "built-in byte-level LM on pydoc_data.topics", "cache": str(series.root),
              "lm_layers": lm_config.n_layer, "lm_layer_recorded": lm_config.layer, "d_model": lm_config.d_model,
              "lm_steps": lm_config.steps,
              "lm_eval_loss": ", ".join(f"{c.eval_loss:.3f}" for c in series.checkpoints)}
    return series.acts_paths, tuple(f"LM step {c.step}" for c in series.checkpoints), source


def _complete(run_dir: Path) -> bool:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "completed" and (run_dir / "checkpoints" / "final").is_dir()
