"""Options shared by the commands that read logs (``analyze``, ``import``, ``compare``, ``recommend``)."""

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
        from ..console import printable

        raise click.BadParameter(printable(str(exc).removeprefix("--map ")), ctx=ctx, param=param) from None
    return value


def map_option(f):
    """``--map NAME=COLUMN`` (repeatable): the command's parameter ``maps`` (a tuple of strings)."""
    return click.option("--map", "maps", multiple=True, metavar="NAME=COLUMN", callback=_check_maps,
                        help=MAP_HELP)(f)
