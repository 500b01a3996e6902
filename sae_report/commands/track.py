"""`sae-report track`: SAE-Track across a model's checkpoints (train the series, analyse, report)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

#: SAE settings of the built-in study (tiny LM, d_model 64): small enough for a laptop CPU.
BUILTIN_SAE = {"total_steps": 2000, "batch_size": 1024, "expansion_factor": 8, "l1_alpha": 0.03,
               "learning_rate": 1e-3, "checkpoint_every": 0, "log_every": 1, "dead_window": 200}


class InputError(click.ClickException):
    """Unusable input: one line, exit 2."""

    exit_code = 2

from .options import config_option


@click.command(short_help="Follow SAE features across a model's training checkpoints.")
@click.argument("acts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--builtin", is_flag=True, help="Train (or reuse) the built-in byte-level LM on pydoc text and track its checkpoints.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("runs/track"), show_default=True,
              help="Output folder: one run directory per SAE, plus track/.")
@click.option("--fraction", type=float, default=0.05, show_default=True, help="Budget of each recurrent SAE as a fraction of the first's.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Full budget in steps (first SAE and controls; TrainConfig's total_steps). Built-in: 2000.")
@config_option("batch_size", note="every SAE of the series (built-in: 1024)")
@config_option("d_sae", note="every SAE of the series")
@config_option("l1_alpha", note="every SAE of the series")
@config_option("learning_rate", note="every SAE of the series")
@click.option("--control", "controls", type=int, multiple=True,
              help="Checkpoint index that also gets a from-scratch control (repeatable; default: the last).")
@click.option("--probe-fraction", type=float, default=0.25, show_default=True,
              help="At each control, continue the recurrent SAE to this budget fraction to measure its tokens (0: off).")
@click.option("--init-optimizer", is_flag=True, help="Recurrent SAEs also take the previous SAE's Adam state.")
@click.option("--threshold", type=float, default=None,
              help="Decoder cosine counted as a matched feature (default 0.9; --reanalyze: the series' own).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TrainConfig YAML shared by every SAE.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="TrainConfig override (repeatable).")
@click.option("--eval-tokens", type=int, default=65536, show_default=True,
              help="Tokens per checkpoint for L0, explained variance, dead features and births/deaths.")
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="Speed-up target: the fresh SAE's final loss x (1 + tolerance) (explained variance: minus it).")
@click.option("--reanalyze", is_flag=True, help="Do not train: analyse OUT/track/series.json again (no torch needed).")
@click.option("--format", "formats", default="md,html,json", show_default=True, help="Report formats.")
@click.option("--lm-preset", type=click.Choice(["small", "tiny"]), default="small", show_default=True,
              help="Built-in: model size (small: d_model 64, 3 layers; tiny: d_model 16, for smoke runs).")
@click.option("--lm-steps", type=int, default=None, help="Built-in: language-model training steps (small: 1500, tiny: 200).")
@click.option("--lm-checkpoints", type=int, default=16, show_default=True, help="Built-in: checkpoints along its training.")
@click.option("--lm-layer", type=int, default=1, show_default=True, help="Built-in: block (0-based) whose output residual stream is recorded.")
@click.option("--lm-spacing", type=click.Choice(["linear", "log"]), default="linear", show_default=True, help="Built-in: checkpoint spacing.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Built-in: cache folder (default $SAE_REPORT_CACHE or ~/.cache/sae-report).")
@config_option("seed", note="the LM's and every SAE's", default=0, show_default=True)
@config_option("threads", note="the LM uses torch's default with 0", default=0, show_default=True)
def track(acts, builtin, out, fraction, steps, batch_size, d_sae, l1_alpha, learning_rate, controls, probe_fraction, init_optimizer,
          threshold, config_path, overrides, eval_tokens, tolerance, reanalyze, formats, lm_preset, lm_steps, lm_checkpoints, lm_layer,
          lm_spacing, cache_dir, seed, threads) -> None:
    """Follow SAE features across a model's training checkpoints (SAE-Track, arXiv 2412.17626).

    ACTS are activation sources, one per model checkpoint in training order (.npy, .safetensors,
    .pt or shard folders, [n_tokens, d_in]). The first SAE trains from scratch; each next one
    starts from the previous SAE with FRACTION of the budget; a from-scratch control on the last
    checkpoint measures the speed-up. Writes OUT/sae_NN/ run directories and OUT/track/ (track.json,
    report.md, report.html, charts/).

    \b
    Examples:
      sae-report track --builtin --out runs/track   # a tiny LM, minutes on a CPU
      sae-report track acts/ckpt_*.npy --steps 20000 --out runs/lm_track
      sae-report track --reanalyze --out runs/track --threshold 0.8
    """
    from ..runlog import RunLogError
    from ..report.track import write_track_report
    from ..track import analyze_series, read_manifest

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    if bad := [f for f in fmts if f not in ("md", "html", "json")]:
        raise click.UsageError(f"--format: unknown format {bad[0]!r} (choose from md, html, json)")
    if threshold is not None and not 0 < threshold <= 1:
        raise click.UsageError(f"--threshold must be in (0, 1], got {threshold}")
    if not 0 <= tolerance < 1:
        raise click.UsageError(f"--tolerance must be in [0, 1), got {tolerance}")
    if not 0 <= probe_fraction <= 1:
        raise click.UsageError(f"--probe-fraction must be in [0, 1], got {probe_fraction}")
    if not 0 < fraction <= 1:
        raise click.UsageError(f"--fraction must be in (0, 1], got {fraction}")
    if reanalyze and (acts or builtin):
        raise click.UsageError("--reanalyze reads OUT/track/series.json: give no ACTS and no --builtin")
    if not reanalyze and bool(acts) == builtin:
        raise click.UsageError("give activation sources (one per checkpoint) or --builtin, not both" if acts else
                               "give activation sources (one per checkpoint, in training order) or --builtin")
    if acts and len(acts) < 2:
        raise click.UsageError("a series needs at least two activation sources (one per checkpoint)")
    try:
        if not reanalyze:
            _train(acts, builtin, out, fraction, steps, batch_size, d_sae, l1_alpha, learning_rate, controls,
                   probe_fraction, init_optimizer, threshold, config_path, overrides, lm_preset, lm_steps, lm_checkpoints, lm_layer, lm_spacing,
                   cache_dir, seed, threads)
        manifest = read_manifest(out)
        if threshold is not None:
            manifest = type(manifest)(**{**manifest.__dict__, "threshold": threshold})
        analysis = analyze_series(manifest, n_eval=eval_tokens, seed=seed, tolerance=tolerance)
        files = write_track_report(analysis, out / "track", fmts, command=" ".join(["sae-report", *sys.argv[1:]]))
    except RunLogError as exc:
        raise InputError(str(exc)) from None
    for line in analysis.headline:
        click.echo(f"- {line}")
    for note in analysis.notes:
        click.echo(f"  note: {note}")
    click.echo("wrote " + ", ".join(str(f) for f in files if f.suffix in (".json", ".md", ".html")))


def _train(acts, builtin, out, fraction, steps, batch_size, d_sae, l1_alpha, learning_rate, controls, probe_fraction,
           init_optimizer,
           threshold, config_path, overrides, lm_preset, lm_steps, lm_checkpoints, lm_layer, lm_spacing, cache_dir, seed, threads) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise click.ClickException("training the series needs torch: pip install 'sae-report[train]'")
    from trainer.config import ConfigError
    from trainer.lm import LMConfig
    from trainer.track import TrackConfig, builtin_inputs, merge_base, train_series

    from ..runlog import RunLogError
    from ..track.activations import inspect

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    labels = None
    if builtin:
        changes = {"seed": seed, "n_checkpoints": lm_checkpoints, "layer": lm_layer, "spacing": lm_spacing,
                   "threads": threads or None, **({"steps": lm_steps} if lm_steps is not None else {})}
        try:
            lm_cfg = LMConfig.preset(lm_preset, **changes)
        except ValueError as exc:
            raise click.UsageError(f"built-in language model: {exc}") from None
        acts, labels, source = builtin_inputs(lm_cfg, cache_dir, log=log)
    else:
        try:
            widths = {inspect(a).d_in for a in acts}
        except RunLogError as exc:
            raise InputError(str(exc)) from None
        if len(widths) > 1:
            raise InputError(f"{acts[0]}: activation sources have different widths {sorted(widths)}; a series needs one d_in")
        source = {"kind": "activation files", "files": ", ".join(str(a) for a in acts)}
    explicit = {"total_steps": steps, "batch_size": batch_size, "d_sae": d_sae, "l1_alpha": l1_alpha,
                "learning_rate": learning_rate, "threads": threads or None, "seed": seed}
    try:
        base = merge_base(BUILTIN_SAE if builtin else {"log_every": 1, "checkpoint_every": 0}, config_path, overrides, explicit)
        cfg = TrackConfig(base=base, fraction=fraction, controls=tuple(controls) or None, init_optimizer=init_optimizer,
                          probe_fraction=probe_fraction or None,
                          threshold=0.9 if threshold is None else threshold, labels=labels, source=source)
        train_series(acts, out, cfg, log=log)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
