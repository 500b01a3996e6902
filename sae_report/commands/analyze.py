"""`sae-report analyze PATH`: find what happened in a run and write its report."""

from __future__ import annotations

import json
import shlex

import click
from polars.exceptions import PolarsError

from ..analysis.result import FindingKind
from ..ingest import mapped_columns
from ..runlog import RunLogError
from .options import TARGET_L0, config_option, map_option

SOURCES = ("auto", "sae-report", "csv", "ndjson", "parquet", "wandb", "tensorboard", "mlflow")
KINDS = tuple(k.value for k in FindingKind)


def _command_line(ctx: click.Context) -> str:
    """The command that regenerates this report (from the parsed options, not sys.argv)."""
    parts = ["sae-report", "analyze", shlex.quote(str(ctx.params["path"]))]
    for p in ctx.command.params:
        if p.name == "path" or not isinstance(p, click.Option):
            continue
        v = ctx.params.get(p.name)
        if v in (None, False, (), "") or v == p.default:
            continue
        flag = max(p.opts, key=len)
        if p.is_flag:
            parts.append(flag)
        else:
            parts.append(f"{flag} {shlex.quote(','.join(v) if isinstance(v, tuple) else str(v))}")
    return " ".join(parts)


def _kinds(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        from ..report.printable import printable

        raise click.BadParameter(printable(f"unknown finding kind(s) {', '.join(bad)} (choose from {', '.join(KINDS)})"))
    return kinds


def _formats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    fmts = tuple(f.strip() for f in value.split(",") if f.strip())
    bad = [f for f in fmts if f not in ("md", "html", "json")]
    if bad or not fmts:
        from ..report.printable import printable

        raise click.BadParameter(printable(f"unknown format(s) {', '.join(bad) or '(none)'} (choose from md, html, json)"))
    return fmts


@click.command(short_help="Find what happened in a run and write its report.")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Report folder (default: RUN/report/, or report/ beside a metrics file).")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis document (analysis.json) on stdout.")
@click.option("--format", "formats", callback=_formats, default=None, metavar="md,html,json",
              help="Report formats to write (default md,html,json; with --json: json).")
@click.option("--target-l0", type=TARGET_L0, default=None,
              help="Target L0: a fraction (0.05), a percent (5%) or a count of features (32, with d_sae).")
@config_option("d_sae", note="of the run, when the log does not say (L0 as count and fraction)")
@config_option("l1_alpha", note="of the run, when the log does not say")
@config_option("learning_rate", note="of the run, when the log does not say")
@config_option("resample_interval", note="of the run, when the log does not say")
@config_option("total_steps", note="planned for the run, when the log does not say")
@click.option("--target-loss", type=float, default=None, help="Final-loss target, e.g. 0.02.")
@click.option("--source", type=click.Choice(SOURCES), default="auto", show_default=True, help="Force the reader.")
@click.option("--run", "run_id", default=None, help="Which run, in a store holding several (W&B, MLflow, a folder of tables).")
@click.option("--fail-on", callback=_kinds, default=None, metavar="KIND[,KIND]",
              help=f"Exit 1 when a finding of these kinds is present ({', '.join(KINDS)}).")
@click.option("--no-siblings", is_flag=True, help="Do not compare with sibling runs in the same folder.")
@map_option
def analyze(path: str, out_dir: str | None, as_json: bool, formats: tuple[str, ...] | None, target_l0: float | None,
            d_sae: int | None, l1_alpha: float | None, learning_rate: float | None, resample_interval: int | None,
            total_steps: int | None, target_loss: float | None, source: str, run_id: str | None,
            fail_on: tuple[str, ...], no_siblings: bool, maps: tuple[str, ...]) -> None:
    """Find what happened in a run: findings, phases, targets; write RUN/report/.

    PATH is a run directory, a metrics file (CSV, NDJSON, Parquet with config.yaml beside it),
    a W&B offline run, TensorBoard event files or an MLflow store.

    \b
    Examples:
      sae-report analyze runs/my_run --target-l0 5%
      sae-report analyze metrics.csv --d-sae 8192 --json > analysis.json
      sae-report analyze runs/x --fail-on collapse,diverged   # exit 1 in CI

    Exit codes: 0 analyzed, 1 a --fail-on kind was found or the report cannot be written,
    2 unusable input, 130 interrupted (Ctrl-C).
    """
    from ..console import print_summary
    from ..report.printable import printable
    from ..pipeline import OutputError, analyze_path

    overrides = {"target_l0": target_l0, "d_sae": d_sae, "l1_alpha": l1_alpha, "learning_rate": learning_rate,
                 "resample_interval": resample_interval, "total_steps": total_steps, "target_loss": target_loss}
    fmts = formats if formats is not None else (("json",) if as_json else ("md", "html", "json"))
    command = _command_line(click.get_current_context())
    written = False
    try:
        try:
            with mapped_columns(maps):
                result = analyze_path(path, out_dir=out_dir, formats=fmts, source=source, run=run_id,
                                      overrides=overrides, siblings=not no_siblings, command=command)
        except RunLogError as exc:
            click.echo(printable(f"Error: {exc}"), err=True)
            raise click.exceptions.Exit(2) from None
        except OutputError as exc:
            click.echo(printable(f"Error: {exc}"), err=True)
            raise click.exceptions.Exit(1) from None
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError, PolarsError) as exc:  # last resort
            click.echo(printable(f"Error: {path}: could not analyze this log ({type(exc).__name__}: {exc}); "
                                 "please report it"), err=True)
            raise click.exceptions.Exit(2) from None
        written = bool(result.files)
        if as_json:
            # ensure_ascii (the default): control and bidi characters arrive as \u escapes, never raw
            click.echo(json.dumps(result.analysis.to_dict(), indent=2, allow_nan=False))
            for n in result.notes:
                click.echo(printable(f"Note: {n}"), err=True)
        else:
            print_summary(result.analysis, files=result.files, notes=result.notes)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, exit 130, no traceback
        done = getattr(exc, "written", written)  # output.ReportInterrupted says; else: did analyze_path return?
        click.echo("Interrupted: " + ("the report had been written in full" if done
                                      else "nothing was written (an earlier report is unchanged)"), err=True)
        raise click.exceptions.Exit(130) from None
    hits = [f for f in result.analysis.findings if f.kind.value in fail_on]
    if hits:
        f = hits[0]
        click.echo(printable(f"Failing: {len(hits)} finding(s) of kind {', '.join(sorted({h.kind.value for h in hits}))} "
                             f"(first: {f.kind.value} in {f.metric} at step {f.step})"), err=True)
        raise click.exceptions.Exit(1)
