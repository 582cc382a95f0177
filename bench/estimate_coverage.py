"""Benchmark: do `clala estimate`'s 95 % intervals hold a run's exact precision, recall and F1, on
runs that are actually imperfect, or say that the sample cannot tell?

Writes a synthetic cohort (default 1,000 studies; images are not used), ingests it, imports its
gold (gold-report) and makes runs of known quality from the gold with `clala derive` (drop / add /
shift rates, `--runs`). The truth is each run's exact region-level precision, recall and F1 against
the gold over its whole population (every report x allowed region x the run's findings; uncertain
counts as not present), overall (micro) and for the three findings most often truly present. Then
for each run, sample size (`--sizes`), strategy (`--strategies`) and each of `--seeds` seeds it
samples the cells (in memory, on arrays built once per run: `draw_sample`), "reviews" them with the
gold and estimates with every interval method (`estimate_cells`). Per grid cell and method it prints
coverage (share of seeds whose interval holds the exact value), mean width, and the share of seeds
where the shipped interval is wider than `--max-width`, which `clala estimate` reports as "cannot
tell". A cell meets the target when the shipped interval covers at least 0.90, or says "cannot
tell" in at least 0.90 of its seeds. One sample per run also goes through the database
(`sample_run`, `estimate_run`) and must give the same figures as the in-memory loop.

    python bench/estimate_coverage.py [--n 1000] [--sizes 100,200,500,1000] [--strategies uniform,stratified]
        [--seeds 100] [--runs NAME:DROP:ADD:SHIFT,...] [--replicates 500] [--json OUT.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.review.estimate import METRICS, EstimateRequest, SampledCells, estimate_cells, estimate_run
from labeling.review.sample import (
    Population,
    SampleRequest,
    draw_sample,
    poisson_probabilities,
    population_codes,
    read_population,
    read_suspicion,
    sample_run,
    suspect_cells,
)
from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.store import Store
from model.synth.writer import generate_cohort
from schemas.labels import PRESENT
from schemas.vocabulary import load_vocabulary

console = Console(soft_wrap=True, width=200)
SHIPPED = "beta"
METHODS = ("beta", "jeffreys", "wilson", "bootstrap")
# name:drop:add:shift, from about F1 0.99 down to about 0.4 against the gold
RUNS = "f99:0.01:0.0001:0,f95:0.05:0.0003:0.02,f80:0.2:0.001:0,f60:0.3:0.003:0.05,f40:0.2:0.01:0"


def population_truth(store: Store, population: Population, reviewed: str) -> np.ndarray:
    """Whether the reviewed run says present in each population cell."""
    return population_codes(store, population, reviewed) == PRESENT


def exact_f1(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "precision": float(tp / (tp + fp)),
            "recall": float(tp / (tp + fn)),
            "f1": float(2 * tp / (2 * tp + fp + fn)),
        }


def reviewed_sample(
    population: Population, truth: np.ndarray, request: SampleRequest, scores: np.ndarray | None = None
) -> SampledCells:
    """A drawn sample "reviewed" by the truth. Given the queue's `scores` (read once per run), a
    Poisson sample is drawn here as `draw_sample` draws it, without reading the queue each seed."""
    if request.strategy == "suspicion" and scores is not None:
        every = poisson_probabilities(scores, request.n, request.floor)
        index = np.flatnonzero(np.random.default_rng(request.seed).random(len(scores)) < every)
        names, inverse, counts = population.level_strata(every)  # finding x class x pi level, as draw_sample
        stratum, pi = names[inverse[index]].astype(object), every[index]
        sizes = {str(k): int(v) for k, v in zip(names, counts)}
    else:
        sample = draw_sample(population, request)
        index, stratum, pi, sizes = sample.index, sample.stratum, sample.pi, sample.params["population_strata"]
    return SampledCells(
        finding=population.findings[index],
        stratum=stratum,
        pi=pi,
        predicted=population.predicted[index] == "present",
        truth=truth[index],
        poisson=request.strategy == "suspicion",
        predicted_class=population.predicted[index],
        population_strata=sizes,
    )


def make_runs(db: Path, specs: list[tuple[str, float, float, float]]) -> None:
    """The derived runs, made by the real command."""
    for name, drop, add, shift in specs:
        command = ["clala", "derive", "gold-report", "--name", name, "--drop", str(drop), "--add", str(add)]
        command += ["--shift", str(shift), "--seed", "5", "--db", str(db)]
        subprocess.run(command, check=True, capture_output=True)


def requests(strategy: str, run: str, size: int, seed: int, queue: Path) -> SampleRequest:
    """`suspect`: stratified with the rules run's suspects; `suspicion`: Poisson from the queue."""
    if strategy == "suspect":
        return SampleRequest(run=run, n=size, strategy="stratified", seed=seed, suspect_run="rules")
    if strategy == "suspicion":
        return SampleRequest(run=run, n=size, strategy="suspicion", seed=seed, suspicion=queue)
    return SampleRequest(run=run, n=size, strategy=strategy, seed=seed)


def write_queue(path: Path, population: Population, rules: np.ndarray) -> None:
    """An audit queue as `clala audit` would rank it: the cells where the rules run and this run
    disagree first (0.9), the cells either marks present next (0.1)."""
    predicted = population.predicted == "present"
    rows = np.flatnonzero(predicted | rules)
    with path.open("w") as handle:
        handle.write("report_key,region,finding,suspicion\n")
        for i in rows:
            score = 0.9 if predicted[i] != rules[i] else 0.1
            handle.write(f'{population.report_keys[i]},"{population.regions[i]}","{population.findings[i]}",{score}\n')


@dataclasses.dataclass(frozen=True)
class GridCell:
    """One cell of the grid: which run, how many sampled cells, which strategy (and its queue)."""

    run: str
    size: int
    strategy: str
    queue: Path


def measure(population, truth, exact, top, args, cell: GridCell) -> dict:
    """Coverage, width and "cannot tell" share of every method, scope and metric over the seeds."""
    run, size, strategy, queue = cell.run, cell.size, cell.strategy, cell.queue
    held: dict = {}
    t0 = time.perf_counter()
    scores = read_suspicion(queue, population) if strategy == "suspicion" else None
    for seed in range(args.seeds):
        request = requests(strategy, run, size, seed, queue)
        cells = reviewed_sample(population, truth, request, scores)
        # max_width 1: no advice searched (the bench counts "cannot tell" from the widths itself)
        result = estimate_cells(
            cells, confidence=0.95, replicates=args.replicates, seed=seed, max_width=1.0, findings=top
        )
        blocks = {"overall": result["overall"], **result["by_finding"]}
        for scope, block in blocks.items():
            for metric in METRICS:
                value = exact[scope][metric]
                for method in METHODS:
                    low, high = block[metric][method]
                    row = held.setdefault((scope, metric, method), [])
                    row.append((low <= value <= high, high - low, high - low > args.max_width))
    seconds = time.perf_counter() - t0
    return {
        key: {
            "coverage": float(np.mean([r[0] for r in rows])),
            "width": float(np.mean([r[1] for r in rows])),
            "cannot_tell": float(np.mean([r[2] for r in rows])),
            "seconds": seconds,
        }
        for key, rows in held.items()
    }


def meets(cell: dict) -> bool:
    return cell["coverage"] >= 0.90 or cell["cannot_tell"] >= 0.90


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="studies in the cohort")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--size", type=int, default=64, help="image size of the cohort (the images are not used)")
    parser.add_argument("--runs", default=RUNS, help="derived runs NAME:DROP:ADD:SHIFT, comma-separated")
    parser.add_argument("--sizes", default="100,200,500,1000", help="cells per sample, comma-separated")
    parser.add_argument(
        "--strategies",
        default="uniform,stratified,suspect,suspicion",
        help="uniform, stratified, suspect (stratified, --suspect rules), suspicion (Poisson from an audit queue)",
    )
    parser.add_argument("--seeds", type=int, default=100, help="samples per grid cell")
    parser.add_argument("--replicates", type=int, default=500, help="bootstrap replicates and beta draws")
    parser.add_argument("--max-width", type=float, default=0.2, help="wider than this: 'cannot tell'")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort and database into DIR and keep them")
    args = parser.parse_args()
    specs = [(n, float(d), float(a), float(s)) for n, d, a, s in (r.split(":") for r in args.runs.split(","))]
    sizes = [int(s) for s in args.sizes.split(",")]
    strategies = args.strategies.split(",")
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "bench_estimate.duckdb"
    if db.exists():
        sys.exit(f"{db} already exists; choose another --keep folder")
    vocab = load_vocabulary()
    grid = []
    try:
        started = time.perf_counter()
        cohort = generate_cohort(workdir / "cohort", n=args.n, seed=args.seed, size=args.size)
        with Store(db) as store:
            ingest(store, cohort / "files", IngestOptions(format="mimic"))
            import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
            label_with_rules(store, RulesRequest(name="rules"))  # the suspect run (F1 about 0.997)
        make_runs(db, specs)
        console.print(
            f"cohort of {args.n:,} studies, gold and {len(specs)} derived runs in {time.perf_counter() - started:.0f} s"
        )
        for run, *_ in specs:
            with Store(db, read_only=True) as store:
                population = read_population(store, run, vocab)
                truth = population_truth(store, population, "gold-report")
                rules = population_truth(store, population, "rules")
                suspected = dataclasses.replace(population, suspect=suspect_cells(store, population, "rules"))
            queue = workdir / f"queue_{run}.csv"
            write_queue(queue, population, rules)
            predicted = population.predicted == "present"
            names, counts = np.unique(population.findings[truth].astype(str), return_counts=True)
            top = [str(f) for f in names[np.argsort(-counts, kind="stable")][:3]]
            exact = {"overall": exact_f1(predicted, truth)}
            for finding in top:
                rows = population.findings == finding
                exact[finding] = exact_f1(predicted[rows], truth[rows])
            o = exact["overall"]
            console.print(
                f"run {run}: {population.size:,} cells; exact TP {o['tp']:,}, FP {o['fp']:,}, FN {o['fn']:,}: "
                f"precision {o['precision']:.3f}, recall {o['recall']:.3f}, F1 {o['f1']:.3f}"
                f"; top findings {', '.join(top)}"
            )
            for size in sizes:
                for strategy in strategies:
                    source = suspected if strategy == "suspect" else population
                    found = measure(source, truth, exact, top, args, GridCell(run, size, strategy, queue))
                    grid.append({"run": run, "exact": exact, "size": size, "strategy": strategy, "cells": found})
                    report_cell(grid[-1], top)
            with Store(db) as store:
                check_through_the_database(store, run, args)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    summary(grid)
    if args.json is not None:
        rows = [
            {**g, "cells": [{"scope": k[0], "metric": k[1], "method": k[2], **v} for k, v in g["cells"].items()]}
            for g in grid
        ]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_cell(g: dict, top: list[str]) -> None:
    cells = g["cells"]
    parts = []
    for metric in METRICS:
        c = cells[("overall", metric, SHIPPED)]
        others = " ".join(f"{m} {cells[('overall', metric, m)]['coverage']:.2f}" for m in METHODS if m != SHIPPED)
        parts.append(
            f"{metric} cov {c['coverage']:.2f} w {c['width']:.3f} ct {c['cannot_tell']:.2f}"
            f"{'' if meets(c) else ' MISS'} ({others})"
        )
    worst = min((cells[(f, m, SHIPPED)] for f in top for m in METRICS), key=lambda c: (meets(c), c["coverage"]))
    console.print(
        f"  {g['run']} n={g['size']} {g['strategy']}: "
        + "; ".join(parts)
        + f"; worst finding cell cov {worst['coverage']:.2f} ct {worst['cannot_tell']:.2f}"
        + f" [{next(iter(cells.values()))['seconds']:.0f} s]"
    )


def summary(grid: list[dict]) -> None:
    """Per method: the grid cells (run x size x strategy x scope x metric) meeting the target, and
    those under 0.90 coverage (a method's own "cannot tell" excuses a wide interval, not a wrong one)."""
    table = Table(
        "method",
        "grid cells",
        "meet target",
        "coverage < 0.90",
        "min coverage",
        "mean coverage",
        "mean width",
        title="95 % intervals over the grid: a cell meets the target with coverage >= 0.90 or 'cannot tell' >= 0.90",
        title_justify="left",
    )
    for method in METHODS:
        chosen = [v for g in grid for k, v in g["cells"].items() if k[2] == method]
        if not chosen:
            continue
        table.add_row(
            method,
            f"{len(chosen)}",
            f"{sum(meets(c) for c in chosen)}",
            f"{sum(c['coverage'] < 0.90 for c in chosen)}",
            f"{min(c['coverage'] for c in chosen):.2f}",
            f"{np.mean([c['coverage'] for c in chosen]):.3f}",
            f"{np.mean([c['width'] for c in chosen]):.3f}",
        )
    console.print(table)


def check_through_the_database(store: Store, run: str, args: argparse.Namespace) -> None:
    """Seed 0, stratified, stored and estimated as the commands do: the same beta interval as in memory."""
    vocab = load_vocabulary()
    request = SampleRequest(run=run, n=200, strategy="stratified", seed=0)
    sample_run(store, request, vocab)
    stored = estimate_run(
        store, EstimateRequest(run=run, reviewed="gold-report", replicates=args.replicates, seed=0)
    ).result["overall"]["f1"]
    population = read_population(store, run, vocab)
    cells = reviewed_sample(population, population_truth(store, population, "gold-report"), request)
    expected = estimate_cells(cells, confidence=0.95, replicates=args.replicates, seed=0)["overall"]["f1"]
    if stored["estimate"] != expected["estimate"] or not np.allclose(stored[SHIPPED], expected[SHIPPED]):
        sys.exit(f"{run}: the stored estimate {stored} differs from the in-memory one {expected}")


if __name__ == "__main__":
    raise SystemExit(main())
