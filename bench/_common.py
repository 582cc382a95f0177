"""Shared by the benchmark scripts (run as `python bench/NAME.py`, so this folder is on the path)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def bench_workdir(keep: Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """The folder for a run's databases: `--keep DIR` (kept), else a temporary one (and its cleanup)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep, None
    cleanup = tempfile.TemporaryDirectory(prefix="clala-bench-")
    return Path(cleanup.name), cleanup
