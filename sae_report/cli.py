"""The ``sae-report`` command line: a click group; each command lives in ``sae_report/commands/``."""

from __future__ import annotations

import click

from . import __version__
from .commands.analyze import analyze
from .commands.compare import compare
from .commands.export import export
from .commands.fixtures import fixtures
from .commands.harvest import harvest
from .commands.importer import import_
from .commands.recommend import recommend
from .commands.sweep import sweep
from .commands.track import track
from .commands.train import train
from .commands.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sae-report")
def main() -> None:
    """Train sparse autoencoders, find what happened in a run, and write the report.

    \b
    Examples:
      sae-report train --report            # small SAE, synthetic data, report
      sae-report analyze runs/my_run       # findings, phases -> RUN/report/
      sae-report recommend runs/* --target-l0 0.05
    """


for _command in (train, analyze, compare, recommend, tune, sweep, import_, export, track, fixtures, harvest):
    main.add_command(_command)
