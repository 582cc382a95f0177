"""Benchmark: combining real label sources on the IU X-ray reports, where no truth is known:
the rules, the human MeSH codes (`clala import mesh`) and a keyword-spotting source (the weak
baseline of bench/rules_vs_mesh.py) combined by Dawid-Skene, beside majority vote in the same run.

For each source it prints, at image level over the findings the MeSH mapping can produce, the
quality Dawid-Skene *estimates* from its confusion matrices and class priors (expected precision
and recall, micro over findings), beside the *measured* agreement: the source scored against the
MeSH codes, and against each combination. The question it answers is whether the estimated
qualities rank the sources as the measured agreement does, without a gold standard.

    python bench/combine_iu.py [--csv ../shared/data/iu_xray/indiana_reports.csv] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import bench_workdir, keyword_baseline
from rich.console import Console
from rich.table import Table
from rules_vs_mesh import DEFAULT_CSV, mesh_findings

from labeling.ingest import IngestOptions, ingest
from labeling.review import CompareOptions, compare_to_reference
from labeling.sources.combine import CLASSES, CombineRequest, combine_runs
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store

console = Console(soft_wrap=True, width=160)
SOURCES = ("rules", "mesh", "keywords")


def estimated_quality(params: dict, source: str, findings: list[str], tasks: int) -> tuple[float, float]:
    """Expected (precision, recall) of `source` at image level, micro over `findings`, from the
    combination's confusion matrices (rows: true class) and priors; every finding has `tasks` cells."""
    present = CLASSES.index("present")
    tp = said = positives = 0.0
    for finding in findings:
        matrix = params["confusion"]["image"].get(finding, {}).get(source)
        if matrix is None:
            continue
        priors = np.asarray(params["priors"]["image"][finding])
        matrix = np.asarray(matrix)
        tp += tasks * priors[present] * matrix[present, present]
        said += tasks * float(priors @ matrix[:, present])
        positives += tasks * priors[present]
    return tp / max(said, 1e-12), tp / max(positives, 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="IU X-ray indiana_reports.csv")
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(f"{args.csv}: IU X-ray reports not found (../shared/data/iu_xray/ beside the repository, or --csv)")
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_combine_iu.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    findings = mesh_findings()
    options = CompareOptions(level="image", findings=findings, uncertain="exclude")
    seconds: dict[str, float] = {}
    try:
        with Store(db) as store:
            ingest(store, args.csv, IngestOptions(format="iu-xray"))
            import_labels(store, ImportRequest("mesh", args.csv, "mesh"))
            label_with_rules(store, RulesRequest(name="rules"))
        keyword_baseline(db, "keywords")
        with Store(db) as store:
            for method in ("majority", "dawid-skene"):
                started = time.perf_counter()
                combine_runs(store, CombineRequest(name=method, runs=list(SOURCES), method=method))
                seconds[method] = time.perf_counter() - started
            params = store.run("dawid-skene").params
            reports = len(store.covered_reports("dawid-skene"))
            against = {}
            for reference in ("mesh", "dawid-skene", "majority"):
                scored = [s for s in SOURCES if s != reference]
                against[reference] = dict(zip(scored, compare_to_reference(store, scored, reference, options)))
    finally:
        if cleanup:
            cleanup.cleanup()

    table = Table(
        "source",
        "estimated P",
        "estimated R",
        "vs MeSH: P",
        "R",
        "F1",
        "vs Dawid-Skene: F1",
        "vs majority: F1",
        title=(
            f"IU X-ray, image level, {reports:,} reports, {len(findings)} findings: Dawid-Skene's estimate of each "
            "source beside its measured agreement"
        ),
        title_justify="left",
    )
    for source in SOURCES:
        precision, recall = estimated_quality(params, source, findings, reports)
        mesh = against["mesh"][source].micro if source != "mesh" else None
        table.add_row(
            source,
            f"{precision:.3f}",
            f"{recall:.3f}",
            f"{mesh.precision:.3f}" if mesh else "(reference)",
            f"{mesh.recall:.3f}" if mesh else "",
            f"{mesh.f1:.3f}" if mesh else "",
            f"{against['dawid-skene'][source].micro.f1:.3f}",
            f"{against['majority'][source].micro.f1:.3f}",
        )
    console.print(table)
    console.print(
        f"combine seconds: majority {seconds['majority']:.1f}, Dawid-Skene {seconds['dawid-skene']:.1f}; "
        "estimates: expected precision/recall from each source's confusion matrix and the class priors"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
