"""`sae-report train` (being built)."""

import click


@click.command()
def train() -> None:
    """Not built yet."""
    raise click.ClickException("train is not built yet")
