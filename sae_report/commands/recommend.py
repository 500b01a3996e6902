"""`sae-report recommend` (being built)."""

import click


@click.command()
def recommend() -> None:
    """Not built yet."""
    raise click.ClickException("recommend is not built yet")
