"""Benchmark: how well `clala sample` + `clala estimate` recover a run's F1 from a reviewed sample,
against the exact F1 computed over every cell in the same run.

Writes a synthetic cohort (default 1,000 studies; images are not used), ingests it, imports its
gold (gold-report) and labels it with the rules. The baseline is the rules run's exact region-level
precision, recall and F1 against the gold over the whole population (every report x allowed
region x the rules' findings; uncertain counts as not present). Then, for each strategy (uniform,
stratified) and each of `--seeds` seeds, it samples `--samples` cells, "reviews" them with the
gold, and estimates F1 with 95 % intervals (Wilson with Kish's effective n, and the Rao-Wu
design bootstrap). Printed per strategy: how often each interval holds the exact F1 (coverage;
target at least 0.90), its mean width, mean |estimate - exact|, and how many samples left F1
undefined (no positive cell sampled: interval [0, 1], which holds the exact F1 trivially; the Wilson
coverage over the samples where F1 is defined is printed too). One sample per strategy also goes through
the database (`sample_run`, `estimate_run`) and must give the same figures as the in-memory loop.

    python bench/estimate_coverage.py [--n 1000] [--samples 200] [--seeds 100] [--replicates 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import bench_workdir
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.review.estimate import EstimateRequest, SampledCells, estimate_cells, estimate_run
from labeling.review.sample import Population, SampleRequest, draw_sample, read_population, sample_run
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store
from model.synth.writer import generate_cohort
from schemas.labels import PRESENT
from schemas.vocabulary import load_vocabulary

console = Console(soft_wrap=True, width=160)
STRATEGIES = ("uniform", "stratified")


def population_truth(store: Store, population: Population, reviewed: str) -> np.ndarray:
    """Whether the reviewed run says present in each population cell."""
    regions, region_index = np.unique(population.regions.astype(str), return_inverse=True)
    findings, finding_index = np.unique(population.findings.astype(str), return_inverse=True)
    keys, row = np.unique(population.report_keys, return_inverse=True)
    codes = store.label_matrix(reviewed, regions.tolist(), findings.tolist(), keys.tolist()).codes
    return codes[row, region_index, finding_index] == PRESENT


def exact_f1(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


def reviewed_sample(population: Population, truth: np.ndarray, request: SampleRequest) -> SampledCells:
    sample = draw_sample(population, request)
    return SampledCells(
        finding=population.findings[sample.index],
        stratum=sample.stratum,
        pi=sample.pi,
        predicted=population.predicted[sample.index] == "present",
        truth=truth[sample.index],
        poisson=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="studies in the cohort")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--size", type=int, default=64, help="image size of the cohort (the images are not used)")
    parser.add_argument("--samples", type=int, default=200, help="cells per sample")
    parser.add_argument("--seeds", type=int, default=100, help="samples per strategy")
    parser.add_argument("--replicates", type=int, default=500, help="bootstrap replicates per estimate")
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort and database into DIR and keep them")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_estimate.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    vocab = load_vocabulary()
    try:
        started = time.perf_counter()
        cohort = generate_cohort(workdir / "cohort", n=args.n, seed=args.seed, size=args.size)
        with Store(db) as store:
            ingest(store, cohort / "files", IngestOptions(format="mimic"))
            import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
            label_with_rules(store, RulesRequest(name="rules"))
            console.print(f"cohort of {args.n:,} studies, gold and rules run in {time.perf_counter() - started:.0f} s")
            population = read_population(store, "rules", vocab)
            truth = population_truth(store, population, "gold-report")
            predicted = population.predicted == "present"
            exact = exact_f1(predicted, truth)
            console.print(
                f"population: {population.size:,} cells ({population.reports:,} reports x "
                f"{len(population.finding_names)} findings' allowed regions); {int(predicted.sum()):,} predicted "
                f"present, {int(truth.sum()):,} truly present"
            )
            console.print(
                f"baseline, exact over every cell: TP {exact['tp']:,}, FP {exact['fp']:,}, FN {exact['fn']:,}; "
                f"precision {exact['precision']:.4f}, recall {exact['recall']:.4f}, F1 {exact['f1']:.4f}"
            )
            rows = []
            with Progress(console=Console(stderr=True), transient=True) as progress:
                for strategy in STRATEGIES:
                    task = progress.add_task(strategy, total=args.seeds)
                    t0 = time.perf_counter()
                    found = []
                    for seed in range(args.seeds):
                        request = SampleRequest(run="rules", n=args.samples, strategy=strategy, seed=seed)
                        cells = reviewed_sample(population, truth, request)
                        result = estimate_cells(cells, confidence=0.95, replicates=args.replicates, seed=seed)
                        found.append(result["overall"]["f1"])
                        progress.advance(task)
                    rows.append((strategy, found, time.perf_counter() - t0))
                    check_through_the_database(store, strategy, args, found[0])
    finally:
        if cleanup is not None:
            cleanup.cleanup()

    table = Table(
        "strategy",
        "samples",
        "coverage Wilson",
        "width Wilson",
        "coverage bootstrap",
        "width bootstrap",
        "Wilson coverage where F1 defined",
        "mean |F1 est - exact|",
        "F1 undefined",
        "seconds",
        title=f"95 % intervals of the rules run's F1 (exact {exact['f1']:.4f}) from {args.samples} reviewed cells",
        title_justify="left",
    )
    for strategy, found, seconds in rows:
        cells = [strategy, f"{len(found)}"]
        for method in ("wilson", "bootstrap"):
            low = np.array([f[method][0] for f in found])
            high = np.array([f[method][1] for f in found])
            cells += [f"{np.mean((low <= exact['f1']) & (exact['f1'] <= high)):.2f}", f"{np.mean(high - low):.3f}"]
        estimates = np.array([np.nan if f["estimate"] is None else f["estimate"] for f in found])
        defined = np.isfinite(estimates)
        held = [f["wilson"][0] <= exact["f1"] <= f["wilson"][1] for f, d in zip(found, defined) if d]
        cells.append(f"{np.mean(held):.2f} of {len(held)}" if held else "-")
        error = np.abs(estimates[defined] - exact["f1"]).mean() if defined.any() else float("nan")
        cells += [f"{error:.3f}", f"{int((~defined).sum())}", f"{seconds:.1f}"]
        table.add_row(*cells)
    console.print(table)
    return 0


def check_through_the_database(store: Store, strategy: str, args: argparse.Namespace, expected: dict) -> None:
    """Seed 0 of a strategy stored and estimated as the commands do: the same F1 and Wilson interval."""
    sample_run(store, SampleRequest(run="rules", n=args.samples, strategy=strategy, seed=0), load_vocabulary())
    stored = estimate_run(
        store, EstimateRequest(run="rules", reviewed="gold-report", replicates=args.replicates, seed=0)
    ).result["overall"]["f1"]
    if stored["estimate"] != expected["estimate"] or not np.allclose(stored["wilson"], expected["wilson"]):
        sys.exit(f"{strategy}: the stored estimate {stored} differs from the in-memory one {expected}")


if __name__ == "__main__":
    raise SystemExit(main())
