"""`clala quickstart`: the whole mission on the embedded defaults, in a scratch folder.

For now: write the sample reports that ship with clala (written for it, not taken from any
dataset), ingest them, label them with the embedded local LLM (llama.cpp server with the shipped
Gemma 3 270M GGUF; a tiny base model that proves the path, not a good labeler) and print the
statistics.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from rich.console import Console

from labeling.terminal import output_console

from labeling.llm_source import LabelOptions
from labeling.readers import Columns
from labeling.run_views import run_label
from labeling.store import Store
from labeling.views import run_ingest, show_stats

SAMPLE_REPORTS = "sample_reports.jsonl"
QUICKSTART_RUN = "quickstart-local"
SAMPLE_COLUMNS = Columns(id="id", text="text", patient="patient_id", study="study_id")


def sample_reports_path() -> Path:
    return Path(str(resources.files("labeling").joinpath("sample_data", SAMPLE_REPORTS)))


def run_quickstart(workdir: str | Path = "clala-quickstart", console: Console | None = None) -> Path:
    """Run the quickstart in `workdir` (created if missing); returns the database path."""
    console = console or output_console()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reports = workdir / SAMPLE_REPORTS
    shutil.copyfile(sample_reports_path(), reports)
    db = workdir / "clala.duckdb"
    console.rule("1. ingest the sample reports")
    run_ingest(db, reports, dataset="samples", columns=SAMPLE_COLUMNS)
    console.rule("2. label them with the embedded local LLM")
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        console.print("[yellow]skipped:[/yellow] the local backend is not installed (pip install 'clala[local]')")
    else:
        status = _run_status(db, QUICKSTART_RUN)
        if status is None:
            run_label(db, QUICKSTART_RUN, LabelOptions(dataset="samples"))
        elif status != "complete":
            run_label(db, None, LabelOptions(), resume=QUICKSTART_RUN)
        else:
            console.print(f"already labeled: run {QUICKSTART_RUN}")
    console.rule("3. what the database holds")
    show_stats(db, console)
    console.print(f"\ndatabase: {db}\nreports:  {reports}\nnext:     clala reports show s90000002 --db {db}\n"
                  f"          clala runs show {QUICKSTART_RUN} --db {db}")
    return db


def _run_status(db: Path, name: str) -> str | None:
    with Store(db, read_only=True) as store:
        return next((run.status.value for run in store.runs() if run.name == name), None)

