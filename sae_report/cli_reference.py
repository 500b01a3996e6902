"""The command-line reference (``docs/cli.md``), generated from each command's ``--help`` so the
docs cannot drift from the code: ``python -m sae_report.cli_reference > docs/cli.md``
(``tests/test_cli_reference.py`` fails when the file is stale)."""

from __future__ import annotations

import click
from click.testing import CliRunner

HEADER = """# Command-line reference

Generated from `sae-report COMMAND --help` by `python -m sae_report.cli_reference > docs/cli.md`
(a test fails when this file and the code disagree). Start with the [README](../README.md).
"""


def help_text(args: list[str]) -> str:
    """The ``--help`` text of ``sae-report ARGS``, as an 80-column terminal shows it."""
    from .cli import main

    result = CliRunner(env={"COLUMNS": "80"}).invoke(main, [*args, "--help"], prog_name="sae-report",
                                                     terminal_width=80)
    if result.exit_code != 0:
        raise RuntimeError(f"sae-report {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return result.output.rstrip() + "\n"


def reference() -> str:
    """The whole reference: the group's help, then each command's, in the order ``--help`` lists them."""
    from .cli import main

    parts = [HEADER, "## sae-report\n\n```text\n" + help_text([]) + "```\n"]
    ctx = click.Context(main, info_name="sae-report")
    for name in main.list_commands(ctx):
        parts.append(f"## sae-report {name}\n\n```text\n" + help_text([name]) + "```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
