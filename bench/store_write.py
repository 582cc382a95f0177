"""Benchmark: writing label rows through `Store.write_labels` against row-by-row inserts.

Creates a fresh database in a temporary folder, stores synthetic reports for the labels to
reference, generates realistic label rows (unique (report, region, finding) cells over the
vocabulary's allowed region/finding pairs) and writes them in Arrow batches through the store,
timed. In the same run, a sample of rows is inserted one parameterized INSERT at a time (in one
transaction) into a second run, as the baseline. Finally the read path (`Store.label_matrix`)
is timed on the big run.

    python bench/store_write.py [--rows 1000000] [--batch 100000] [--sample 5000] [--reports 20000] [--keep DIR]

Exits 0 whether or not the targets hold; prints PASS/FAIL per target.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from _common import bench_workdir
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labeling.store.store import Store
from schemas.labels import UNMENTIONED
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

TARGET_RATIO = 50.0  # store path vs row-by-row
TARGET_ROWS_PER_S = 200_000.0
SEED = 20261129

STATUSES = np.array(["present", "absent", "uncertain"])
STATUS_P = [0.25, 0.65, 0.10]
SEVERITIES = np.array(["mild", "moderate", "severe"])
TEMPORALS = np.array(["new", "improved", "worsened", "unchanged", "resolved"])
EVIDENCE_TEMPLATES = (
    "No {f} in the {r}.",
    "There is {f} in the {r}.",
    "Possible {f} at the {r}.",
    "Mild {f} of the {r}, unchanged.",
    "{f} is seen in the {r}.",
)

console = Console(soft_wrap=True)


def report_tables(n_reports: int) -> tuple[pa.Table, pa.Table]:
    """Arrow tables with the `reports` and (empty) `sentences` columns of the schema."""
    keys = np.arange(1, n_reports + 1, dtype=np.int64)
    texts = [f"FINDINGS: Synthetic report {k}. No acute cardiopulmonary process." for k in keys]
    now = datetime.now()
    reports = pa.table(
        {
            "report_key": pa.array(keys, pa.int64()),
            "dataset": pa.array(["bench"] * n_reports, pa.string()),
            "report_id": pa.array([f"r{k}" for k in keys], pa.string()),
            "version": pa.array(np.ones(n_reports, dtype=np.int32), pa.int32()),
            "patient_id": pa.array([f"p{k // 3}" for k in keys], pa.string()),
            "study_id": pa.array([f"s{k}" for k in keys], pa.string()),
            "image_paths": pa.array([[] for _ in keys], pa.list_(pa.string())),
            "text": pa.array(texts, pa.string()),
            "sections": pa.array(["[]"] * n_reports, pa.string()),
            "text_sha256": pa.array([f"{k:064x}" for k in keys], pa.string()),
            "metadata": pa.array(["{}"] * n_reports, pa.string()),
            "source": pa.array([f"bench:{k}" for k in keys], pa.string()),
            "ingest_id": pa.nulls(n_reports, pa.int32()),
            "ingested_at": pa.array([now] * n_reports, pa.timestamp("us")),
        }
    )
    sentences = pa.table(
        {
            "report_key": pa.array([], pa.int64()),
            "sentence_index": pa.array([], pa.int32()),
            "section": pa.array([], pa.string()),
            "start_char": pa.array([], pa.int32()),
            "end_char": pa.array([], pa.int32()),
            "text": pa.array([], pa.string()),
            "norm_sha256": pa.array([], pa.string()),
        }
    )
    return reports, sentences


def label_table(n_rows: int, n_reports: int, pairs: list[tuple[str, str]], rng: np.random.Generator) -> pa.Table:
    """n_rows labels on unique (report, region, finding) cells, region/finding pairs allowed by the vocabulary."""
    n_cells = n_reports * len(pairs)
    if n_rows > n_cells:
        sys.exit(f"--rows {n_rows:,} exceeds the {n_cells:,} distinct cells of {n_reports:,} reports; raise --reports")
    cells = rng.choice(n_cells, size=n_rows, replace=False)
    report_key = (cells // len(pairs) + 1).astype(np.int64)
    pair = (cells % len(pairs)).astype(np.int64)
    regions = np.array([r for r, _ in pairs], dtype=object)
    findings = np.array([f for _, f in pairs], dtype=object)

    status = rng.choice(STATUSES, size=n_rows, p=STATUS_P)
    none = np.full(n_rows, None, dtype=object)
    severity = np.where(rng.random(n_rows) < 0.2, rng.choice(SEVERITIES, size=n_rows), none)
    temporal = np.where(rng.random(n_rows) < 0.1, rng.choice(TEMPORALS, size=n_rows), none)
    # Evidence text: one of a few sentence templates per (pair, template), built once and indexed.
    template = rng.integers(0, len(EVIDENCE_TEMPLATES), size=n_rows)
    phrases = np.array([t.format(f=f, r=r) for r, f in pairs for t in EVIDENCE_TEMPLATES], dtype=object)
    evidence_text = phrases[pair * len(EVIDENCE_TEMPLATES) + template]
    evidence_start = rng.integers(0, 600, size=n_rows).astype(np.int32)
    evidence_len = np.fromiter((len(s) for s in evidence_text), dtype=np.int32, count=n_rows)
    confidence = np.round(rng.beta(8, 2, size=n_rows), 3).astype(np.float32)
    return pa.table(
        {
            "report_key": pa.array(report_key, pa.int64()),
            "region": pa.array(regions[pair], pa.string()),
            "finding": pa.array(findings[pair], pa.string()),
            "status": pa.array(status, pa.string()),
            "severity": pa.array(severity, pa.string()),
            "temporal": pa.array(temporal, pa.string()),
            "evidence_start": pa.array(evidence_start, pa.int32()),
            "evidence_end": pa.array(evidence_start + evidence_len, pa.int32()),
            "evidence_text": pa.array(evidence_text, pa.string()),
            "confidence": pa.array(confidence, pa.float32()),
        }
    )


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="label rows written through the store")
    parser.add_argument("--batch", type=int, default=100_000, help="rows per write_labels call")
    parser.add_argument("--sample", type=int, default=5_000, help="rows inserted row by row (baseline)")
    parser.add_argument("--reports", type=int, default=20_000, help="reports stored for the labels to reference")
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    if min(args.rows, args.batch, args.sample, args.reports) < 1:
        parser.error("--rows, --batch, --sample and --reports must be positive")

    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_store_write.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")

    try:
        return run(args, db)
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def row_by_row_inserts(db: Path, rows: list[list], columns: int) -> float:
    """Seconds to insert `rows` into labels one parameterized INSERT at a time, in one transaction."""
    placeholders = ", ".join(["?"] * (1 + columns))
    with duckdb.connect(str(db)) as con:
        t0 = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        for row in rows:
            con.execute(f"INSERT INTO labels VALUES ({placeholders})", row)
        con.execute("COMMIT")
        return time.perf_counter() - t0


def run(args: argparse.Namespace, db: Path) -> int:
    vocab = load_vocabulary()
    pairs = [(r, f.name) for f in vocab.findings for r in f.regions]
    rng = np.random.default_rng(SEED)
    console.print(f"database: {db}")
    console.print(
        f"vocabulary {vocab.version}: {len(vocab.region_names)} regions, "
        f"{len(vocab.finding_names)} findings, {len(pairs)} allowed region/finding pairs"
    )

    t0 = time.perf_counter()
    labels = label_table(args.rows, args.reports, pairs, rng)
    console.print(
        f"generated {labels.num_rows:,} label rows in {time.perf_counter() - t0:.2f} s "
        f"({labels.nbytes / 2**20:,.0f} MiB in Arrow)"
    )

    with Store(db) as store:
        t0 = time.perf_counter()
        store.add_reports(*report_tables(args.reports))
        console.print(f"stored {args.reports:,} reports in {time.perf_counter() - t0:.2f} s")

        # --- store path ----------------------------------------------------------------------
        run_id = store.create_run(RunSpec(name="bench-store", kind=RunKind.llm, vocabulary_version=vocab.version))
        stored = 0
        batches = range(0, labels.num_rows, args.batch)
        with Progress(
            TextColumn("write_labels"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("write", total=len(batches))
            t0 = time.perf_counter()
            batch_seconds = []
            for start in batches:
                tb = time.perf_counter()
                stored += store.write_labels(run_id, labels.slice(start, args.batch))
                batch_seconds.append(time.perf_counter() - tb)
                progress.advance(task)
            store_seconds = time.perf_counter() - t0
        count = sum(store.label_status_counts(run_id).values())
        if count != args.rows or stored != args.rows:
            console.print(
                f"[bold red]ERROR[/]: expected {args.rows:,} rows for run {run_id}; "
                f"write_labels returned {stored:,}, the table holds {count:,}"
            )
            return 1
        store_rate = args.rows / store_seconds
        base_id = store.create_run(RunSpec(name="bench-row-by-row", kind=RunKind.llm, vocabulary_version=vocab.version))

        # --- read path -----------------------------------------------------------------------
        read_error = None
        t0 = time.perf_counter()
        try:
            matrix = store.label_matrix(run_id, vocab.region_names, vocab.finding_names)
        except Exception as exc:  # reported below; the write figures still stand
            read_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            console.print(f"[bold red]ERROR[/]: Store.label_matrix failed: {read_error}")
        read_seconds = time.perf_counter() - t0
        filled = args.rows if read_error else int((matrix.codes != UNMENTIONED).sum())
        if filled != args.rows:
            console.print(f"[bold red]ERROR[/]: label matrix holds {filled:,} cells, expected {args.rows:,}")
            return 1

    # --- baseline: row-by-row parameterized inserts, on a connection of its own (no Store) -----
    sample = labels.slice(0, args.sample).to_pylist()
    rows = [[base_id, *row.values()] for row in sample]
    row_seconds = row_by_row_inserts(db, rows, len(labels.column_names))
    with duckdb.connect(str(db), read_only=True) as con:
        base_count = con.execute("SELECT count(*) FROM labels WHERE run_id = ?", [base_id]).fetchall()[0][0]
    if base_count != len(rows):
        console.print(f"[bold red]ERROR[/]: row-by-row run holds {base_count:,} rows, expected {len(rows):,}")
        return 1
    row_rate = len(rows) / row_seconds

    ratio = store_rate / row_rate
    console.print()
    console.print(
        f"store path (write_labels, batches of {args.batch:,}): "
        f"{args.rows:,} rows in {store_seconds:.2f} s = {fmt_rate(store_rate)} rows/s"
    )
    console.print(
        f"  per batch: first {batch_seconds[0]:.3f} s, last {batch_seconds[-1]:.3f} s, "
        f"median {float(np.median(batch_seconds)):.3f} s"
    )
    console.print(
        f"row-by-row INSERT (sample of {len(rows):,}, one transaction): "
        f"{row_seconds:.2f} s = {fmt_rate(row_rate)} rows/s "
        f"(extrapolated {args.rows / row_rate:,.0f} s for {args.rows:,} rows)"
    )
    console.print(f"ratio store / row-by-row: {ratio:,.1f}x")
    if read_error:
        console.print(f"read path label_matrix: failed ({read_error})")
    else:
        console.print(
            f"read path label_matrix: {args.rows:,} labels -> codes{list(matrix.codes.shape)} in {read_seconds:.2f} s"
        )
    console.print()
    ok_ratio = ratio >= TARGET_RATIO
    ok_rate = store_rate >= TARGET_ROWS_PER_S
    verdict = {True: "[bold green]PASS[/]", False: "[bold red]FAIL[/]"}
    console.print(f"{verdict[ok_ratio]} target: >= {TARGET_RATIO:.0f}x faster than row-by-row (measured {ratio:,.1f}x)")
    console.print(f"{verdict[ok_rate]} target: >= {TARGET_ROWS_PER_S:,.0f} rows/s (measured {fmt_rate(store_rate)})")
    if read_error:
        console.print(f"{verdict[False]} read path: Store.label_matrix raised {read_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
