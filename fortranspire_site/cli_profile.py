"""CLI command ``profile``: static cost model, hotspot ranking, optional measurement and plot."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``profile``; sets ``handler`` via set_defaults."""
