"""`clala quickstart`: the whole mission on the embedded defaults, in a scratch folder.

For now: write the sample reports that ship with clala (written for it, not taken from any
dataset), ingest them and print the statistics.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from rich.console import Console

from labeling.readers import Columns
from labeling.views import run_ingest, show_stats

SAMPLE_REPORTS = "sample_reports.jsonl"
SAMPLE_COLUMNS = Columns(id="id", text="text", patient="patient_id", study="study_id")


def sample_reports_path() -> Path:
    return Path(str(resources.files("labeling").joinpath("sample_data", SAMPLE_REPORTS)))


def run_quickstart(workdir: str | Path = "clala-quickstart", console: Console | None = None) -> Path:
    """Run the quickstart in `workdir` (created if missing); returns the database path."""
    console = console or Console()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reports = workdir / SAMPLE_REPORTS
    shutil.copyfile(sample_reports_path(), reports)
    db = workdir / "clala.duckdb"
    console.rule("1. ingest the sample reports")
    run_ingest(db, reports, dataset="samples", columns=SAMPLE_COLUMNS)
    console.rule("2. what the database holds")
    show_stats(db, console)
    console.print(f"\ndatabase: {db}\nreports:  {reports}\nnext:     clala reports show s90000002 --db {db}")
    return db

