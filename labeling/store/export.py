"""Export a run's labels, or reports, to Parquet, CSV or JSONL.

Files are written to a temporary name beside the target and renamed when complete, so an
interrupted export never leaves a half-written file under the requested name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from labeling.core.errors import InputError
from labeling.core.files import atomic_path
from labeling.store.store import Store

EXPORT_FORMATS = ("parquet", "csv", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def export_format(out: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"--format: {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        return fmt
    try:
        return _SUFFIXES[out.suffix.lower()]
    except KeyError:
        raise InputError(
            f"{out}: cannot tell the format from the suffix; pass --format ({', '.join(EXPORT_FORMATS)})"
        ) from None


def write_table(table: pa.Table, out: Path, fmt: str) -> None:
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv":
            flat = table.select([c for c in table.column_names if not pa.types.is_list(table[c].type)])
            lists = [c for c in table.column_names if pa.types.is_list(table[c].type)]
            for column in lists:  # CSV has no lists: join them with ';' as the readers expect
                flat = flat.append_column(column, pa.array([";".join(v or []) for v in table[column].to_pylist()]))
            pacsv.write_csv(flat, tmp)  # pyright: ignore[reportPrivateImportUsage]  # public API; the stubs miss it
        else:
            with open(tmp, "w", encoding="utf-8") as stream:
                for row in table.to_pylist():
                    stream.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")


def export_labels(store: Store, run: str, out: str | Path, fmt: str | None = None) -> int:
    """Write a run's labels to `out`; returns the rows written."""
    out = Path(out)
    fmt = export_format(out, fmt)
    table = store.labels(run)
    write_table(table, out, fmt)
    return table.num_rows


def export_reports(
    store: Store,
    out: str | Path,
    fmt: str | None = None,
    *,
    dataset: str | None = None,
    run: str | None = None,
    all_versions: bool = False,
) -> int:
    """Reports (latest versions unless `all_versions`), optionally only one dataset's or those
    a run labeled; returns the rows written."""
    out = Path(out)
    fmt = export_format(out, fmt)
    run_id = store.run(run).run_id if run else None
    table = store._arrow(
        f"""SELECT dataset, report_id, version, patient_id, study_id, image_paths, text, sections,
                   text_sha256, metadata, ingested_at
            FROM {"reports" if all_versions else "current_reports"} r
            WHERE (? IS NULL OR dataset = ?)
              AND (? IS NULL OR report_key IN (SELECT report_key FROM labels WHERE run_id = ?))
            ORDER BY dataset, report_key""",
        [dataset, dataset, run_id, run_id],
    )
    write_table(table, out, fmt)
    return table.num_rows
