"""CLI commands that need Django: serve, bootstrap-demo, tenant, key, purge."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register serve, bootstrap-demo, tenant, key and purge; each sets ``handler``."""
