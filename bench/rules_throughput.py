"""Benchmark: the rules label source on the whole IU X-ray collection, against medspaCy's default
pipeline over the same texts in the same run.

Ingests `indiana_reports.csv` into a fresh database, then times
- clala: `clala label --backend rules` end to end (`label_with_rules`: reading the stored
  sentences, medspaCy target rules + ConText on each distinct sentence, region resolution,
  storing the labels, one transaction per batch), building the pipeline included;
- baseline: `medspacy.load()` (PyRuSH sentence splitter, target matcher, ConText, its default
  rules) with the same target rules, over the same reports' full texts through `nlp.pipe`,
  extracting the same entity attributes and no more (no regions, nothing stored).

    python bench/rules_throughput.py [--csv ../shared/data/iu_xray/indiana_reports.csv] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.sources import ReportSelection
from labeling.sources.rules import RulesLabeler, RulesRequest, label_with_rules, silence_pyrush
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "iu_xray" / "indiana_reports.csv"
TARGET_REPORTS_PER_S = 500
console = Console(soft_wrap=True, width=160)


def medspacy_default(texts: list[str]) -> tuple[float, int]:
    """Seconds and entities for medspaCy's default pipeline with clala's target rules."""
    import medspacy
    from medspacy.target_matcher import TargetRule

    silence_pyrush()
    started = time.perf_counter()
    nlp = medspacy.load()
    labeler = RulesLabeler(load_vocabulary())
    nlp.get_pipe("medspacy_target_matcher").add(
        [TargetRule(phrase, finding) for phrase, finding, _ in labeler.target_rules()]
    )
    entities = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for doc in nlp.pipe(texts, batch_size=256):
            for ent in doc.ents:
                entities += 1
                _ = (ent._.is_negated, ent._.is_uncertain, ent._.is_historical, ent._.is_hypothetical)
    return time.perf_counter() - started, entities


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="IU X-ray indiana_reports.csv")
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(f"{args.csv}: IU X-ray reports not found (../shared/data/iu_xray/ beside the repository, or --csv)")
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_rules.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    try:
        with Store(db) as store:
            ingest(store, args.csv, IngestOptions(format="iu-xray"))
            keys = store.current_report_keys()
            by_key = store.report_texts(keys)
            texts = [by_key[k] for k in keys]
            started = time.perf_counter()
            summary = label_with_rules(
                store, RulesRequest(name="bench-rules", reports=ReportSelection(report_keys=keys))
            )
            clala_s = time.perf_counter() - started
        base_s, entities = medspacy_default(texts)
    finally:
        if cleanup:
            cleanup.cleanup()

    n = len(keys)
    table = Table("figure", "value", title=f"Rules labeler on {n:,} IU X-ray reports", title_justify="left")
    table.add_row("clala rules: seconds (end to end, stored)", f"{clala_s:.2f}")
    table.add_row("clala rules: reports/s", f"{n / clala_s:,.0f}")
    table.add_row(
        "clala rules: sentences read / distinct",
        f"{summary.counts['sentences']:,} / {summary.counts['distinct_sentences']:,}",
    )
    table.add_row("clala rules: labels stored", f"{summary.labels:,}")
    table.add_row("medspaCy default pipeline: seconds", f"{base_s:.2f}")
    table.add_row("medspaCy default pipeline: reports/s", f"{n / base_s:,.0f}")
    table.add_row("medspaCy default pipeline: entities", f"{entities:,}")
    table.add_row("ratio clala / medspaCy default (reports/s)", f"{base_s / clala_s:.2f}x")
    console.print(table)
    rate = n / clala_s
    verdict = "PASS" if rate >= TARGET_REPORTS_PER_S else "FAIL"
    console.print(f"target >= {TARGET_REPORTS_PER_S} reports/s: {verdict} ({rate:,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
