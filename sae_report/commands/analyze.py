"""`sae-report analyze` (being built)."""

import click


@click.command()
def analyze() -> None:
    """Not built yet."""
    raise click.ClickException("analyze is not built yet")
