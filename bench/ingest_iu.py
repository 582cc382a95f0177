"""Benchmark: ingesting the whole IU X-ray report collection, against sentence splitting alone.

Ingests `indiana_reports.csv` into a fresh temporary database with `labeling.ingest.pipeline.ingest`
(timed, end to end: reading, validation, sections, sentences, hashing, storing), then ingests
it again (everything already stored: nothing added). As baselines in the same run it times
clala's sentence splitting alone (`detect_sections` + `split_sentences_many`, with a cold and
then a warm spaCy tokenizer cache) and medspaCy's PyRuSH sentence splitter over the same
stored texts.

    python bench/ingest_iu.py [--csv ../shared/data/iu_xray/indiana_reports.csv] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest.pipeline import IngestResult, ingest, read_input
from labeling.ingest.sections import detect_sections
from labeling.ingest.sentences import _nlp, split_sentences_many
from labeling.store.store import Store

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "iu_xray" / "indiana_reports.csv"

console = Console(soft_wrap=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="IU X-ray indiana_reports.csv")
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(
            f"{args.csv}: IU X-ray reports not found. Put the collection's indiana_reports.csv there "
            "(../shared/data/iu_xray/ beside the repository) or pass --csv PATH."
        )

    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_ingest_iu.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    try:
        return run(args.csv, db)
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def ingest_once(db: Path, csv: Path) -> IngestResult:
    """`clala ingest` without its display: read and validate, then store."""
    source = read_input(csv)
    with Store(db) as store:
        return ingest(store, source)


def run(csv: Path, db: Path) -> int:
    console.print(f"input: {csv}")
    console.print(f"database: {db}")

    # --- clala ingest, twice -------------------------------------------------------------------
    t0 = time.perf_counter()
    first = ingest_once(db, csv)
    first_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = ingest_once(db, csv)
    second_seconds = time.perf_counter() - t0

    with Store(db, read_only=True) as store:
        counts = next(d for d in store.dataset_counts() if d["dataset"] == first.dataset)
        stored, sentences, distinct = counts["versions"], counts["sentences"], counts["distinct_sentences"]
        by_key = store.report_texts(store.current_report_keys(first.dataset))
        texts = [by_key[k] for k in sorted(by_key)]

    problems = []
    if stored != len(first.added):
        problems.append(f"store holds {stored:,} reports, first ingest says it added {len(first.added):,}")
    if sentences != first.sentences:
        problems.append(f"store holds {sentences:,} sentences, first ingest says {first.sentences:,}")
    if second.added or second.changed:
        problems.append(f"second ingest added {len(second.added):,} and changed {len(second.changed):,} reports")

    # --- baseline: clala's splitting only -------------------------------------------------------
    # Cold: a fresh spaCy pipeline (empty tokenizer cache, as the first ingest had), its load timed
    # apart; warm: the same texts again through the now-filled cache.
    def split_all() -> tuple[float, int]:
        t0 = time.perf_counter()
        sections = [detect_sections(text) for text in texts]
        split = split_sentences_many(texts, sections)
        return time.perf_counter() - t0, sum(len(s) for s in split)

    _nlp.cache_clear()
    t0 = time.perf_counter()
    _nlp()
    spacy_load_seconds = time.perf_counter() - t0
    split_seconds, split_count = split_all()
    warm_seconds, _ = split_all()

    # --- baseline: medspaCy PyRuSH ------------------------------------------------------------
    import loguru

    loguru.logger.remove()  # PyRuSH logs every rule it loads
    import medspacy

    t0 = time.perf_counter()
    # medspaCy 1.x selects its components with `medspacy_enable`; a plain `enable=` is passed on
    # to spaCy and leaves the default pipeline (PyRuSH + target matcher + ConText) in place.
    nlp = medspacy.load(medspacy_enable=["medspacy_pyrush"])
    rush_load_seconds = time.perf_counter() - t0
    if nlp.pipe_names != ["medspacy_pyrush"]:
        console.print(f"[yellow]note[/]: medspaCy pipeline is {nlp.pipe_names}, not PyRuSH alone")
    t0 = time.perf_counter()
    rush_count = sum(sum(1 for _ in doc.sents) for doc in nlp.pipe(texts))
    rush_seconds = time.perf_counter() - t0

    n = len(texts)
    table = Table(title="IU X-ray ingest", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("rows read", f"{first.read:,}")
    table.add_row("reports stored", f"{stored:,}")
    table.add_row("skipped blank", f"{len(first.skipped_blank):,}")
    table.add_row("duplicates dropped", f"{first.duplicates:,}")
    table.add_row("sentences", f"{sentences:,}")
    table.add_row("distinct normalized sentences", f"{distinct:,}")
    table.add_row("ingest 1: seconds", f"{first_seconds:.2f}")
    table.add_row("ingest 1: reports/s", f"{len(first.added) / first_seconds:,.0f}")
    table.add_row("ingest 2: added / unchanged", f"{len(second.added):,} / {second.unchanged:,}")
    table.add_row("ingest 2: seconds", f"{second_seconds:.2f}")
    table.add_row("clala splitting: spaCy load seconds", f"{spacy_load_seconds:.2f}")
    table.add_row("clala splitting only (sections + sentences), cold: seconds", f"{split_seconds:.2f}")
    table.add_row("clala splitting only, cold: reports/s", f"{n / split_seconds:,.0f}")
    table.add_row("clala splitting only, warm tokenizer cache: seconds", f"{warm_seconds:.2f}")
    table.add_row("clala splitting only: sentences", f"{split_count:,}")
    table.add_row("PyRuSH pipeline", "+".join(nlp.pipe_names))
    table.add_row("PyRuSH (medspaCy): load seconds", f"{rush_load_seconds:.2f}")
    table.add_row("PyRuSH: pipe seconds", f"{rush_seconds:.2f}")
    table.add_row("PyRuSH: reports/s", f"{n / rush_seconds:,.0f}")
    table.add_row("PyRuSH: sentences", f"{rush_count:,}")
    table.add_row(
        "clala splitting speed / PyRuSH (cold; warm)",
        f"{rush_seconds / split_seconds:,.1f}x; {rush_seconds / warm_seconds:,.1f}x",
    )
    table.add_row(
        "ingest 1 total / splitting only (cold, + spaCy load)",
        f"{first_seconds / (split_seconds + spacy_load_seconds):,.2f}x",
    )
    console.print(table)
    console.print(f"skipped blank ids ({len(first.skipped_blank)}): {', '.join(first.skipped_blank)}")
    for problem in problems:
        console.print(f"[bold red]ERROR[/]: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
