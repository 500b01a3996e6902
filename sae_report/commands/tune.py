"""`sae-report tune` (being built)."""

import click


@click.command()
def tune() -> None:
    """Not built yet."""
    raise click.ClickException("tune is not built yet")
