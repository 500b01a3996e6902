"""`sae-report import` (being built)."""

import click


@click.command(name="import")
def import_() -> None:
    """Not built yet."""
    raise click.ClickException("import is not built yet")
