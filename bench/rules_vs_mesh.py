"""Benchmark: agreement of the rules label source with the IU X-ray MeSH codes (the human indexers'
labels), at image and region level, against a keyword baseline in the same run.

Ingests `indiana_reports.csv`, imports its MeSH codes (`clala import mesh`), labels the reports
with the rules (`clala label --backend rules`) and, as the baseline, with keyword spotting alone
(every synonym of a finding in a FINDINGS/IMPRESSION sentence is "present" in the finding's
default regions: no negation, no uncertainty, no location words). Both are scored against the
MeSH run over the reports both cover and over the findings the MeSH mapping can produce, with
`--uncertain` (default exclude), as stored and rolled up the vocabulary's finding hierarchy
(`--roll-up` of `clala compare`: a specific finding present implies its generic ancestors, so
"nodular opacity" read as mass/nodule agrees with MeSH "Opacity"). Prints micro and macro F1,
their ratio to the baseline, and the findings with the most disagreement (rolled up).

Region level scores located labels only: a label without a region (the no-location rule) is no
region's cell, on either side; image level collapses both. The other no-location choice is
measured in the same run (`--no-location default-regions` of `clala compare`: every run's
region-less labels read in their finding's default regions, both lungs for most).

    python bench/rules_vs_mesh.py [--csv ../shared/data/iu_xray/indiana_reports.csv] [--uncertain exclude] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from _common import bench_workdir, keyword_baseline
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.review import CompareOptions, compare_runs
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "iu_xray" / "indiana_reports.csv"
console = Console(soft_wrap=True, width=160)


def mesh_findings() -> list[str]:
    """Findings the MeSH mapping can produce."""
    mapping = json.loads(resources.files("schemas").joinpath("vocabulary_data", "iu_mesh.json").read_text())
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("finding"), str):
                found.add(node["finding"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(mapping["terms"])
    vocab = load_vocabulary()
    return [f for f in vocab.finding_names if f in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="IU X-ray indiana_reports.csv")
    parser.add_argument("--uncertain", default="exclude", help="exclude | positive | negative | own-class")
    parser.add_argument("--top", type=int, default=10, help="findings listed by disagreement")
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(f"{args.csv}: IU X-ray reports not found (../shared/data/iu_xray/ beside the repository, or --csv)")
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_rules_vs_mesh.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    try:
        with Store(db) as store:
            ingest(store, args.csv, IngestOptions(format="iu-xray"))
            import_labels(store, ImportRequest("mesh", args.csv, "mesh"))
            label_with_rules(store, RulesRequest(name="rules"))
        keyword_baseline(db, "keywords")
        findings = mesh_findings()
        results = {}
        other_choice = {}  # rolled up? -> rules at region level, region-less labels in default regions
        with Store(db, read_only=True) as store:
            for roll_up in (False, True):
                for level in ("image", "region"):
                    for run in ("rules", "keywords"):
                        started = time.perf_counter()
                        options = CompareOptions(
                            level=level, findings=findings, uncertain=args.uncertain, roll_up=roll_up
                        )
                        results[run, level, roll_up] = compare_runs(store, run, "mesh", options)
                        results[run, level, roll_up].seconds = time.perf_counter() - started
                choice = CompareOptions(
                    findings=findings, uncertain=args.uncertain, roll_up=roll_up, no_location="default-regions"
                )
                other_choice[roll_up] = compare_runs(store, "rules", "mesh", choice)
    finally:
        if cleanup:
            cleanup.cleanup()

    summary = Table(
        "level",
        "roll-up",
        "source",
        "reports",
        "micro P",
        "micro R",
        "micro F1",
        "macro F1",
        "kappa (micro)",
        "compare s",
        title=f"Against the MeSH import ({len(findings)} findings both cover, uncertain {args.uncertain})",
        title_justify="left",
    )
    for (run, level, roll_up), c in results.items():
        summary.add_row(
            level,
            "yes" if roll_up else "no",
            run,
            f"{c.reports:,}",
            f"{c.micro.precision:.3f}",
            f"{c.micro.recall:.3f}",
            f"{c.micro.f1:.3f}",
            f"{c.macro.f1:.3f}",
            f"{c.micro.kappa:.3f}",
            f"{c.seconds:.2f}",
        )
    console.print(summary)
    for roll_up in (False, True):
        for level in ("image", "region"):
            ratio = results["rules", level, roll_up].micro.f1 / max(results["keywords", level, roll_up].micro.f1, 1e-9)
            console.print(
                f"{level} level{' (rolled up)' if roll_up else ''}: rules micro-F1 / keyword baseline "
                f"micro-F1 = {ratio:.2f}x"
            )
    choices = Table(
        "no-location choice",
        "roll-up",
        "micro P",
        "micro R",
        "micro F1",
        "macro F1",
        "tp",
        "fp",
        "fn",
        title="Rules at region level under both no-location choices (both runs alike)",
        title_justify="left",
    )
    for roll_up in (False, True):
        for name, c in (
            ("region-less (clala's)", results["rules", "region", roll_up]),
            ("default regions", other_choice[roll_up]),
        ):
            m = c.micro
            choices.add_row(
                name, "yes" if roll_up else "no", f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}",
                f"{c.macro.f1:.3f}", f"{m.tp:,}", f"{m.fp:,}", f"{m.fn:,}",
            )  # fmt: skip
    console.print(choices)
    top = Table(
        "finding",
        "MeSH positives",
        "rules positives",
        "tp",
        "fp (rules only)",
        "fn (MeSH only)",
        "F1",
        title="Image level, rolled up: largest sources of disagreement",
        title_justify="left",
    )
    rows = sorted(results["rules", "image", True].by_finding, key=lambda r: -(r.fp + r.fn))[: args.top]
    for r in rows:
        top.add_row(r.name, f"{r.support:,}", f"{r.tp + r.fp:,}", f"{r.tp:,}", f"{r.fp:,}", f"{r.fn:,}", f"{r.f1:.3f}")
    console.print(top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
