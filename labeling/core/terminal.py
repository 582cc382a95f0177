"""Consoles for command output."""

from __future__ import annotations

import sys

from rich.console import Console


def output_console() -> Console:
    """stdout: lines are not wrapped, and where stdout is not a terminal (a pipe, a file, a
    test) tables get 160 columns rather than rich's 80, so that names are not cut short."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
