"""`flux-pipeline sim`: serve the API simulator on a loopback port."""

from __future__ import annotations

import click


@click.command()
def sim() -> None:
    """Serve the API simulator on a loopback port."""
    raise click.ClickException("the simulator is not built yet")
