"""Options shared by the commands: ``--map`` (the commands that read logs) and the one type of a
target L0 (``analyze``, ``compare``, ``recommend``, ``tune``, ``sweep``)."""

from __future__ import annotations

from typing import Any

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


def slot_options(f):
    """``--devices DEV,DEV,...`` and ``--parallel N``: trainings at once in child processes, one per
    device slot (``sweep``, ``tune``); the parameters ``devices`` (str) and ``parallel`` (int or None)."""
    f = click.option("--parallel", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Runs trained at once (default: the number of --devices; 1 for cpu). On a CPU each gets "
                          "cores/N threads unless threads is set (N > 1).")(f)
    return click.option("--devices", default="", metavar="DEV,DEV,...",
                        help="Devices to train on, e.g. cuda:0,cuda:1, cpu, or all (every CUDA device; cpu "
                             "without one). Default: the config's device.")(f)


def config_option(key: str, flag: str | None = None, *, note: str = "", **kwargs: Any):
    """A click option for ``TrainConfig.<key>``, declared once in the trainer's config: the flag
    (``--key-with-dashes`` unless ``flag`` is given; the parameter is named ``key``), the field's
    type (a number type is checked positive as the config checks it), and the first sentence of the
    field's docstring as help, plus ``note``. ``kwargs`` go to ``click.option`` (``default`` ...)."""
    field_type, doc = _config_field(key)
    first = doc.split(". ")[0].rstrip(".")
    help_text = f"{first}{'; ' + note if note else ''}."
    kwargs.setdefault("default", None)
    return click.option(flag or "--" + key.replace("_", "-"), key, type=field_type, help=help_text, **kwargs)


def _config_field(key: str) -> tuple[Any, str]:
    """The click type and docstring of ``TrainConfig.<key>`` (``trainer.config`` needs no torch)."""
    import typing

    from trainer.config import TrainConfig
    from trainer.docs_keys import field_docs

    hints = typing.get_type_hints(TrainConfig)
    if key not in hints:
        raise KeyError(f"{key}: not a TrainConfig key")
    args = [a for a in typing.get_args(hints[key]) if a is not type(None)] or [hints[key]]
    base = args[0]
    if base is bool:
        kind: Any = click.BOOL
    elif base is int:
        kind = click.IntRange(min=0 if key in _ZERO_OK else 1, max=2**31)
    elif base is float:
        kind = click.FloatRange(min=0, min_open=key not in _ZERO_OK)
    elif typing.get_origin(base) is typing.Literal:
        kind = click.Choice([str(v) for v in typing.get_args(base)])
    else:
        kind = click.STRING
    return kind, field_docs().get(key, key)


#: Numeric keys for which 0 is a meaningful value (off / auto / no penalty).
_ZERO_OK = frozenset({"threads", "seed", "l1_alpha", "resample_interval", "l0_coefficient"})
