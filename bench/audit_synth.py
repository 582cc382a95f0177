"""Benchmark: `clala audit --folds 5` finds corrupted labels on a synthetic cohort.

Steps, all through the real commands and functions:
  1. `clala synth --n N --size S`, `clala ingest --format mimic`, `clala import synth-gold`
     (run gold-report: the reports' own region-level labels, present, absent and uncertain);
  2. run `corrupted`: gold-report with 10 % of its present labels made absent and 2 % of its
     absent labels made present (seeded). "Absent" means the gold's absent labels (rows), not
     its unmentioned cells: those are about 100 per report, and 2 % of them would be 2 false
     positives a report, more than the report's true findings;
  3. `clala audit corrupted --folds 5 --data cohort`: five CLALA-Nets (a small configuration,
     decoder off), each trained on the corrupted labels of the reports outside its fold and
     predicting the fold; the queue ranks every audited cell.

Figures: precision and recall of the first k cells of a ranking against the corrupted cells
(k = the number corrupted), for the audit's ranking (cleanlab: flagged first, then 1 - the
self-confidence label quality), for the same probabilities ranked raw (|given - p|, the
model's probability alone) and for random orders of the same cells (the mean of 100 seeded
orders; the expectation, corrupted / cells, printed beside it); and cleanlab's flagged set on
its own. All measured in the same run. Resumable with --keep (the folds' checkpoints are reused).

    python bench/audit_synth.py [--n 400] [--size 64] [--epochs 4] [--folds 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from _common import bench_workdir, clala, synth_cohort  # noqa: E402

from labeling.store.run_records import record_run  # noqa: E402
from labeling.store.store import Store  # noqa: E402
from schemas.runs import RunKind, RunSpec  # noqa: E402
from schemas.vocabulary import load_vocabulary  # noqa: E402

Cell = tuple[int, str, str]


def corrupt_gold(db: Path, present_rate: float, absent_rate: float, seed: int) -> tuple[set[Cell], set[Cell]]:
    """Run `corrupted`: gold-report's region-level labels with present -> absent at `present_rate`
    and absent -> present at `absent_rate` (seeded); the cells changed each way."""
    with Store(db) as store:
        rows = [r for r in store.labels("gold-report").to_pylist() if r["region"] is not None]
        keys = store.covered_reports("gold-report").tolist()
        rng = np.random.default_rng(seed)
        made_absent: set[Cell] = set()
        made_present: set[Cell] = set()
        for status, rate, changed in (("present", present_rate, made_absent), ("absent", absent_rate, made_present)):
            chosen = [i for i, r in enumerate(rows) if r["status"] == status]
            for i in rng.choice(chosen, round(rate * len(chosen)), replace=False).tolist():
                changed.add((rows[i]["report_key"], rows[i]["region"], rows[i]["finding"]))
                rows[i] = {**rows[i], "status": "absent" if status == "present" else "present"}
        if not any(run.name == "corrupted" for run in store.runs()):
            columns = {c: [r[c] for r in rows] for c in ("report_key", "region", "finding", "status")}
            spec = RunSpec(
                name="corrupted", kind=RunKind.derived, vocabulary_version=load_vocabulary().version, backend="bench"
            )
            record_run(store, spec, keys, pa.table(columns))
    return made_absent, made_present


def at_k(order: list[Cell], corrupted: set[Cell], k: int) -> tuple[float, float]:
    hits = len(set(order[:k]) & corrupted)
    return hits / k, hits / len(corrupted)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="studies")
    parser.add_argument("--size", type=int, default=64, help="phantom image height")
    parser.add_argument("--seed", type=int, default=11, help="cohort and corruption seed")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model-option",
        action="append",
        default=None,
        help="CLALA-Net setting KEY=VALUE (repeat; default: use_llcl=false, use_itcl=false: the region head alone)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the cohort, database and checkpoints here")
    args = parser.parse_args()

    model_options = args.model_option or ["use_llcl=false", "use_itcl=false"]
    workdir, cleanup = bench_workdir(args.keep)
    try:
        started = time.perf_counter()
        cohort, db = synth_cohort(workdir, args.n, args.seed, args.size)
        made_absent, made_present = corrupt_gold(db, 0.10, 0.02, args.seed)
        corrupted = made_absent | made_present
        prepared = time.perf_counter() - started
        queue = workdir / "audit.csv"
        started = time.perf_counter()
        clala(
            *("audit", "corrupted", "--folds", args.folds, "--data", cohort, "--db", db, "--out", queue),
            *("--checkpoint-dir", workdir / "folds", "--epochs", args.epochs, "--image-size", args.image_size),
            *("--batch-size", args.batch_size, "--lr", args.lr, "--patience", 0, "--backbone", args.backbone),
            *("--d-model", args.d_model, "--threads", args.threads, "--device", "cpu", "--split-seed", args.seed),
            *(f"--model-option={option}" for option in model_options),
        )
        audited = time.perf_counter() - started
        with queue.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        cells: list[Cell] = [(int(r["report_key"]), r["region"], r["finding"]) for r in rows]
        missing = corrupted - set(cells)
        k = len(corrupted)
        given = np.asarray([r["given"] == "present" for r in rows], float)
        p = np.asarray([float(r["p_present:folds"]) for r in rows])
        raw = [cells[i] for i in np.lexsort((np.arange(len(cells)), -np.abs(given - p)))]
        rng = np.random.default_rng(args.seed)
        shuffles = [[cells[i] for i in rng.permutation(len(cells))] for _ in range(100)]
        flagged = {c for c, r in zip(cells, rows) if r["flagged"] == "true"}

        print(
            f"cohort: {args.n} studies at {args.size} px; gold-report corrupted: {len(made_absent)} present -> absent "
            f"(10 %), {len(made_present)} absent -> present (2 %); {len(cells):,} cells audited "
            f"({len(missing)} corrupted cells not in the queue); prepared in {prepared:.0f} s"
        )
        print(
            f"audit: {args.folds} folds, {args.backbone} d_model {args.d_model} at {args.image_size} px, "
            f"{args.epochs} epochs, decoder off, {' '.join(model_options)}, CPU x {args.threads} threads: "
            f"{audited:.0f} s"
        )
        print(f"\nk = {k} (the corrupted cells)")
        print("| ranking | precision at k | recall at k | x random |")
        print("| --- | --- | --- | --- |")
        expected = k / len(cells)
        for name, order in (("clala audit (cleanlab)", cells), ("raw probability |given - p|", raw)):
            precision, recall = at_k(order, corrupted, k)
            print(f"| {name} | {precision:.3f} | {recall:.3f} | {precision / expected:.1f} |")
        random_figures = np.asarray([at_k(order, corrupted, k) for order in shuffles])
        precision, recall = random_figures.mean(axis=0)
        print(f"| random (mean of 100 seeded orders) | {precision:.4f} | {recall:.4f} | {precision / expected:.1f} |")
        print(f"| random (expected) | {expected:.4f} | {expected:.4f} | 1.0 |")
        hits = len(flagged & corrupted)
        print(
            f"\ncleanlab flagged {len(flagged):,} cells: precision {hits / max(len(flagged), 1):.3f}, "
            f"recall {hits / k:.3f}"
        )
        for name, part in (("present -> absent", made_absent), ("absent -> present", made_present)):
            found = len(set(cells[:k]) & part)
            print(f"recall at k of the {name} cells: {found}/{len(part)}")
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == "__main__":
    main()
