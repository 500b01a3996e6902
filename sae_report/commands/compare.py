"""`sae-report compare` (being built)."""

import click


@click.command()
def compare() -> None:
    """Not built yet."""
    raise click.ClickException("compare is not built yet")
