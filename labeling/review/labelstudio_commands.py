"""CLI view of `clala export-labelstudio`: where the tasks and the labeling config went."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from labeling.core.terminal import output_console
from labeling.review.labelstudio import LabelStudioExport, export_labelstudio


def run_export_labelstudio(
    db: str | Path,
    run: str,
    out_dir: str | Path,
    limit: int | None = None,
    vocabulary: str | None = None,
    enable: list[str] | None = None,
    console: Console | None = None,
) -> LabelStudioExport:
    console = console or output_console()
    written = export_labelstudio(db, run, out_dir, vocabulary, enable, limit)
    console.print(
        f"wrote {written.tasks:,} tasks with {written.labels:,} predicted labels "
        f"({written.spans:,} on evidence spans, {written.appendix:,} without evidence) "
        f"to {written.tasks_path}"
    )
    console.print(f"labeling config: {written.config_path}")
    console.print(
        "In Label Studio: create a project with this config, import the tasks, review, then "
        "export as JSON and run `clala import labelstudio FILE --name NAME`."
    )
    return written
