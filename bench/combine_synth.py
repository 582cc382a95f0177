"""Benchmark: combining label sources (`clala combine`) on a synthetic cohort with known truth,
against each single source and majority vote in the same run.

Writes a cohort with `clala synth` (default 1,000 studies), ingests its reports and imports its
gold (runs gold-report, gold-image). Three sources are made from the report truth with seeded
corruptions (`clala derive`): drop 0.3 of present labels; add present labels at rate 0.1; shift
0.2 to a neighbouring region plus drop 0.1. The fourth source is the rules. The four are combined
by majority vote and by Dawid-Skene, and so are the three corrupted sources alone (the rules
are near-perfect on the synthetic report text, which leaves a combination little room); every
run is scored against the report truth at region level (micro-F1 over the same reports and
findings, uncertain cells excluded).

    python bench/combine_synth.py [--n 1000] [--seed 0] [--size 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.review import CompareOptions, compare_to_reference
from labeling.sources.combine import CombineRequest, combine_runs
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store
from model.labels.label_specs import DeriveRequest, LabelSpec, derive_run
from model.synth.writer import generate_cohort

console = Console(soft_wrap=True, width=160)
CORRUPTIONS = {
    "drop0.3": dict(drop=0.3),
    "add0.1": dict(add=0.1),
    "shift0.2-drop0.1": dict(shift=0.2, drop=0.1),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="studies in the cohort")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="image size of the cohort (the images are not used)")
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort and database into DIR and keep them")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_combine_synth.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    seconds = {}
    try:
        cohort = workdir / "cohort"
        started = time.perf_counter()
        generate_cohort(cohort, n=args.n, seed=args.seed, size=args.size)
        console.print(f"cohort of {args.n:,} studies written in {time.perf_counter() - started:.1f} s")
        with Store(db) as store:
            ingest(store, cohort / "files", IngestOptions(format="mimic"))
            import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
            for i, (name, corruption) in enumerate(CORRUPTIONS.items()):
                spec = LabelSpec.checked(source="gold-report", seed=args.seed + 1 + i, **corruption)
                derive_run(store, DeriveRequest(name, spec))
            label_with_rules(store, RulesRequest(name="rules"))
            sources = [*CORRUPTIONS, "rules"]
            # the four sources, and the three corrupted ones alone (the rules are near-perfect here)
            for method in ("majority", "dawid-skene"):
                for name, runs in ((method, sources), (f"{method}-3", list(CORRUPTIONS))):
                    started = time.perf_counter()
                    combine_runs(store, CombineRequest(name=name, runs=runs, method=method))
                    seconds[name] = time.perf_counter() - started
        with Store(db, read_only=True) as store:
            scored = [*sources, "majority", "dawid-skene", "majority-3", "dawid-skene-3"]
            results = compare_to_reference(
                store, scored, "gold-report", CompareOptions(level="region", uncertain="exclude")
            )
    finally:
        if cleanup:
            cleanup.cleanup()

    table = Table(
        "run",
        "reports",
        "findings",
        "micro P",
        "micro R",
        "micro F1",
        "macro F1",
        "seconds",
        title=f"Region level vs the report truth ({args.n:,} studies, seed {args.seed})",
        title_justify="left",
    )
    for run, c in zip(scored, results):
        table.add_row(
            run,
            f"{c.reports:,}",
            str(len(c.findings)),
            f"{c.micro.precision:.3f}",
            f"{c.micro.recall:.3f}",
            f"{c.micro.f1:.4f}",
            f"{c.macro.f1:.3f}",
            f"{seconds[run]:.1f}" if run in seconds else "",
        )
    console.print(table)
    f1 = {run: c.micro.f1 for run, c in zip(scored, results)}
    for suffix, runs in (("", sources), ("-3", list(CORRUPTIONS))):
        best = max(runs, key=lambda run: f1[run])
        ds, mv = f1[f"dawid-skene{suffix}"], f1[f"majority{suffix}"]
        console.print(
            f"{len(runs)} sources: Dawid-Skene micro-F1 {ds:.4f} vs best single source {best} {f1[best]:.4f} "
            f"({ds - f1[best]:+.4f}); majority {mv:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
