"""`sae-report track` (being built)."""

import click


@click.command()
def track() -> None:
    """Not built yet."""
    raise click.ClickException("track is not built yet")
