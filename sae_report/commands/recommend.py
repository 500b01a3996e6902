"""`sae-report recommend`: the next l1_alpha (with an interval, never in the wrong direction), rules
from the findings, and the next run's config."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import TARGET_L0
from .compare import InputError
from .options import map_option


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--target-l0", type=TARGET_L0, default=None,
              help="Target L0: a fraction (0.05), a percent (5%) or a count of features (32). Default: the runs' common target_l0.")
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation as JSON on stdout.")
@click.option("--write-config", "write_config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the next run's full config YAML here (ready for `sae-report train CONFIG`).")
@click.option("--base", default=None, metavar="RUN",
              help="Run whose config the next run starts from (default: the most recent run with a config and the common d_in/d_sae).")
@click.option("--no-rules", is_flag=True, help="Only the l1_alpha fit; skip analyzing runs for other rules.")
@click.option("--min-ce-loss-score", type=click.FloatRange(0, 1), default=None, metavar="X",
              help="Also name the sparsest run whose spliced-in loss score (ce_loss_score) stays at or above X.")
@map_option
def recommend(runs: tuple[str, ...], target_l0: float | None, as_json: bool, write_config: Path | None,
              base: str | None, no_rules: bool, min_ce_loss_score: float | None, maps: tuple[str, ...]) -> None:
    """Recommend the next config from one or more runs.

    Achieved L0 per run is the second-half median (not the last point); l1_alpha comes from a
    monotone log-log fit (L0 falls as l1_alpha rises), with an interval.

    \b
    Example:
      sae-report recommend runs/train_* --target-l0 0.05 --write-config next.yaml
      sae-report train next.yaml --report
    """
    from ..compare import expand_paths
    from ..compare.advice import advise
    from ..recommend.nextconfig import NextConfigError, source_config_path, write_next_config
    from ..runlog import atomic_write_text

    paths = expand_paths(list(runs))
    if not paths:
        raise InputError(f"{runs[0]}: no runs found (give run directories, globs, or a folder of runs)")
    try:
        advice = advise(paths, target_l0, base=base, with_rules=not no_rules, column_map=maps,
                        min_ce_loss_score=min_ce_loss_score)
    except NextConfigError as exc:
        raise click.ClickException(f"next config is not valid: {exc}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    comp = advice.comparison
    if not comp.rows:
        raise InputError(comp.unreadable[0]["reason"] if comp.unreadable else f"{runs[0]}: no runs found")
    fixed_l0 = all(r.coefficient is None for r in comp.rows)  # TopK / BatchTopK: k sets L0, nothing to fit
    if advice.l1 is None and not fixed_l0:
        if comp.target_l0 is None:
            raise click.UsageError("no target L0: pass --target-l0 (e.g. 0.05 for 5%), or record target_l0 in the runs' config")
        reasons = "; ".join(f"{r.id}: {r.excluded}" for r in comp.excluded) or comp.no_recommendation_reason
        raise click.ClickException(f"no run can be used for the {comp.coefficient} fit ({reasons})")
    source_file = None
    if write_config is not None:
        if advice.next is None:
            raise click.ClickException(f"{advice.base_id}: no config recorded, cannot write the next config")
        extra: list[str] = []
        src = advice.source
        if src is not None:  # a run of SAELens, sparsify, ...: also the changes in its own key names
            source_file = source_config_path(write_config, src)
            extra = [f"The base run was trained with {src.tool}: the same changes in its own key names are in "
                     f"{source_file.name}.",
                     *(["This config has no data_source, so `sae-report train` uses its built-in synthetic data; "
                        "add data_source: files and data_path: YOUR_ACTIVATIONS to train on your model's activations."]
                       if "data_source" not in advice.next.config else [])]
        try:
            write_next_config(write_config, advice.next, extra)
            if src is not None:
                atomic_write_text(source_file, src.yaml(advice.base_id, ours=write_config.name))
        except OSError as exc:
            raise click.ClickException(f"{exc.filename or write_config}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        doc = advice.to_dict()
        doc["config_written"] = str(write_config) if write_config else None
        doc["source_config_written"] = str(source_file) if source_file else None
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
        return
    _print(advice, write_config, source_file)


def _print(advice, write_config: Path | None, source_file: Path | None = None) -> None:
    l1 = advice.l1
    if l1 is None:  # TopK / BatchTopK runs: k sets L0
        click.secho(advice.comparison.no_recommendation_reason, bold=True)
    else:
        click.secho(f"{l1.coefficient}: {l1.l1_alpha:.3g}  (range {l1.low:.3g} to {l1.high:.3g}; {l1.direction} "
                    f"relative to {l1.reference_l1_alpha:g}; predicted settled L0 {100 * l1.predicted_l0:.3g}%)", bold=True)
        click.echo(l1.explanation)
        for w in l1.warnings:
            click.secho(f"warning: {w}", fg="yellow")
    if advice.comparison.faithful is not None:  # --min-ce-loss-score: the sparsest run that keeps the model's loss
        click.echo(advice.comparison.faithful.text)
    for r in advice.comparison.excluded:
        click.secho(f"excluded: {r.id}: {r.excluded}", fg="yellow")
    for w in advice.comparison.warnings:
        if w.startswith("Confounder") or "not settled" in w:
            click.secho(f"warning: {w}", fg="yellow")
    if advice.rules:
        click.echo("\nAlso change (from the findings of " + advice.base_id + "):")
        for r in advice.rules:
            click.echo(f"- {r.parameter}: {r.current} -> {r.proposed}. {r.reason} Expected: {r.predicted_effect}")
    for n in advice.notes:
        click.echo(f"note: {n}")
    if write_config is not None:
        click.echo(f"\nwrote {write_config} (based on {advice.base_id}); run it with: "
                   f"sae-report train {write_config}")
    if source_file is not None:
        src = advice.source
        shown = ", ".join(f"{c['key']}: {c['new']}" for c in src.changes) or "no key of theirs to change"
        click.echo(f"wrote {source_file}: the same changes in the key names of {src.tool} ({shown}); apply them to "
                   f"the {src.tool} config that trained {advice.base_id}")
