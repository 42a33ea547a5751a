"""Placeholder: commands arrive with their issue."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
