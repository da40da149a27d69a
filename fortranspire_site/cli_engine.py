"""CLI commands that run the engine only: translate, profile (no Django, no database)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``translate`` and ``profile``; each sets ``handler`` via set_defaults."""
