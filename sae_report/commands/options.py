"""Options shared by the commands: ``--map`` (the commands that read logs) and the one type of a
target L0 (``analyze``, ``compare``, ``recommend``, ``tune``, ``sweep``)."""

from __future__ import annotations

import click

MAP_HELP = ("Read the log's metric NAME as COLUMN when the built-in aliases do not know it, e.g. "
            "--map loss/total=loss --map my_l0=l0 (COLUMN: step, loss, mse, l1, l0, l0_frac, dead, dead_frac, "
            "explained_variance, lr, l1_alpha, ..., or an alias such as l0_pct or fvu). Repeatable; "
            "commas separate pairs.")


def _check_maps(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Validate ``--map`` values; they stay strings (``with mapped_columns(value):`` parses them)."""
    from ..ingest import ColumnMapError, parse_column_map

    try:
        parse_column_map(value)
    except ColumnMapError as exc:
        from ..report.printable import printable

        raise click.BadParameter(printable(str(exc).removeprefix("--map ")), ctx=ctx, param=param) from None
    return value


def map_option(f):
    """``--map NAME=COLUMN`` (repeatable): the command's parameter ``maps`` (a tuple of strings)."""
    return click.option("--map", "maps", multiple=True, metavar="NAME=COLUMN", callback=_check_maps,
                        help=MAP_HELP)(f)


class TargetL0(click.ParamType):
    """A target L0: a fraction of the dictionary (``0.05``), a percent (``5%``), or a count of active
    features per token (``32``: any value of 1 or more), which each command converts with the
    dictionary size it knows (``--d-sae``, the runs' or the config's ``d_sae``)."""

    name = "TARGET"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            v = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a fraction like 0.05, a percent like 5% or a count like 32", param, ctx)
        if not v > 0 or v != v or v == float("inf") or (text.endswith("%") and v >= 1):
            self.fail(f"{value!r} must be a fraction of the dictionary between 0 and 1 (0.05 = 5%) "
                      "or a count of features (32)", param, ctx)
        return v


TARGET_L0 = TargetL0()
