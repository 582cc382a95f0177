"""Benchmark: agreement of the rules label source with a synthetic cohort's report truth, against a
keyword baseline in the same run.

Writes a cohort with `clala synth` (default 1,000 studies at 224 px), ingests its reports,
imports its gold (`clala import synth-gold`: runs NAME-report and NAME-image), labels the reports
with the rules and, as the baseline, with keyword spotting alone (every finding synonym present
in its default regions). Both are scored against the report truth, and the rules also against the
image truth (which includes lesions the report leaves out), at image and region level.

    python bench/rules_vs_synth.py [--n 1000] [--seed 0] [--uncertain exclude] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import bench_workdir, keyword_baseline
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.review import CompareOptions, compare_runs
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store
from model.synth.writer import generate_cohort

console = Console(soft_wrap=True, width=160)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="studies in the cohort")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uncertain", default="exclude", help="exclude | positive | negative | own-class")
    parser.add_argument("--top", type=int, default=8, help="findings listed by disagreement")
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort and database into DIR and keep them")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_rules_vs_synth.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    try:
        cohort = workdir / "cohort"
        started = time.perf_counter()
        generate_cohort(cohort, n=args.n, seed=args.seed, size=224)
        console.print(f"cohort of {args.n:,} studies written in {time.perf_counter() - started:.1f} s")
        with Store(db) as store:
            ingest(store, cohort / "files", IngestOptions(format="mimic"))
            import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
            label_with_rules(store, RulesRequest(name="rules"))
        keyword_baseline(db, "keywords")
        results = {}
        with Store(db, read_only=True) as store:
            for level in ("image", "region"):
                for run, reference in (("rules", "gold-report"), ("keywords", "gold-report"), ("rules", "gold-image")):
                    results[run, reference, level] = compare_runs(
                        store, run, reference, CompareOptions(level=level, uncertain=args.uncertain)
                    )
    finally:
        if cleanup:
            cleanup.cleanup()

    table = Table(
        "level",
        "source",
        "reference",
        "reports",
        "findings",
        "micro P",
        "micro R",
        "micro F1",
        "macro F1",
        "kappa",
        title=f"Rules vs synthetic truth (uncertain {args.uncertain})",
        title_justify="left",
    )
    for (run, reference, level), c in results.items():
        table.add_row(
            level,
            run,
            reference,
            f"{c.reports:,}",
            str(len(c.findings)),
            f"{c.micro.precision:.3f}",
            f"{c.micro.recall:.3f}",
            f"{c.micro.f1:.3f}",
            f"{c.macro.f1:.3f}",
            f"{c.micro.kappa:.3f}",
        )
    console.print(table)
    for level in ("image", "region"):
        ratio = results["rules", "gold-report", level].micro.f1 / max(
            results["keywords", "gold-report", level].micro.f1, 1e-9
        )
        console.print(f"{level} level: rules micro-F1 / keyword baseline micro-F1 (report truth) = {ratio:.2f}x")
    top = Table(
        "finding",
        "truth positives",
        "rules positives",
        "tp",
        "fp",
        "fn",
        "F1",
        title="Region level vs report truth: largest sources of disagreement",
        title_justify="left",
    )
    for r in sorted(results["rules", "gold-report", "region"].by_finding, key=lambda r: -(r.fp + r.fn))[: args.top]:
        top.add_row(r.name, f"{r.support:,}", f"{r.tp + r.fp:,}", f"{r.tp:,}", f"{r.fp:,}", f"{r.fn:,}", f"{r.f1:.3f}")
    console.print(top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
