"""Benchmark: model quality against label quality on a synthetic cohort (`clala sensitivity`).

Steps, all through the real commands and functions:
  1. `clala synth --n N --size S` (default prevalence; about 2,000 training images at N = 3100),
     `clala ingest --format mimic`, `clala import synth-gold` (runs gold-report and gold-image),
     `clala label --backend rules` (run rules), and a noisy source: gold-report with 20% of its
     present labels shifted to a neighbouring region and 1% of the allowed absent cells turned
     present (`clala derive`, run noisy; the add rate is per allowed cell, about 160 per report,
     so 1% is ~1.6 false positives a report, near the number of true ones: 10% would bury them);
  2. the sensitivity grid against gold-report: drops 0, 0.2, 0.4, 0.6 of gold-report, and the
     sources rules and noisy, each over the seeds; a small CLALA-Net (resnet18 at 96 px, decoder
     off, 2 epochs) per cell, scored on the test split. 12 trainings of about 2 minutes each on
     two quiet CPU cores (111 s measured): about 25-30 minutes; several times that when another
     job shares the cores. `--sources rules,noisy,gold-image` adds the image truth as a
     source (two more trainings).
The LLM source is not in the CPU run: the embedded 270M model labels a few reports a minute on
two cores, and its labels are not a meaningful point. Add one with `--sources` where a GPU-served
LLM run exists.

Figures: the table (label F1 vs model mean lesion F1, mean ± std over seeds), and each point's
model F1 as a ratio to the clean gold-report cell's, measured in the same run. Resumable: a
second run with the same --keep folder trains only the cells that are missing.

    python bench/sensitivity_synth.py [--n 3100] [--size 96] [--epochs 2] [--seeds 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import bench_workdir, clala, synth_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=3100, help="studies (about 2,000 training images at 3100)")
    parser.add_argument("--size", type=int, default=96, help="phantom image height")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=11, help="cohort seed")
    parser.add_argument("--drop", default="0,0.2,0.4,0.6")
    parser.add_argument("--sources", default="rules,noisy")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep the cohort, database and checkpoints here")
    args = parser.parse_args()

    from model.experiments.commands import show_sensitivity
    from model.experiments.sensitivity import SensitivityGrid, parse_rates
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    workdir, cleanup = bench_workdir(args.keep)
    started = time.perf_counter()
    fresh = not (workdir / "bench.duckdb").exists()
    cohort, db = synth_cohort(workdir, args.n, args.seed, args.size)
    if fresh:
        clala("label", "--backend", "rules", "--name", "rules", "--db", db)
        clala(
            "derive",
            "gold-report",
            "--name",
            "noisy",
            "--add",
            0.01,
            "--shift",
            0.2,
            "--seed",
            0,
            "--reference",
            "gold-report",
            "--db",
            db,
        )
    prepared = time.perf_counter() - started
    print(f"cohort: {args.n} studies at {args.size} px in {cohort}; prepared in {prepared:.0f} s", flush=True)

    grid = SensitivityGrid(
        data=str(cohort),
        db=str(db),
        base="gold-report",
        reference="gold-report",
        drop=parse_rates(args.drop, "--drop"),
        sources=[s.strip() for s in (args.sources or "").split(",") if s.strip()],
        seeds=list(range(args.seeds)),
        out=str(workdir / "sensitivity"),
    )
    template = TrainConfig(
        run="(per cell)",
        data=str(cohort),
        db=str(db),
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=0,
        workers=args.workers,
        threads=args.threads,
        model=model_settings(backbone=args.backbone, d_model=args.d_model, no_decoder=True),
    )
    result = show_sensitivity(grid, template)
    clean = next(r for r in result.rows if r.series == "drop" and r.rate == 0)
    print(
        f"\nmodel mean lesion F1 as a ratio to the clean gold-report cell ({clean.model_f1_mean:.3f}); "
        f"constant-prediction baseline {clean.baseline_f1_mean:.3f} "
        f"({clean.baseline_f1_mean / clean.model_f1_mean:.2f}x)"
    )
    for row in result.rows:
        print(
            f"  {row.series:6} {row.setting:12} label F1 {row.label_f1_mean:.3f}  model F1 {row.model_f1_mean:.3f} "
            f"± {row.model_f1_std:.3f}  ratio {row.model_f1_mean / clean.model_f1_mean:.2f}x"
        )
    trained = [c for c in result.cells if c.outcome == "trained" and c.train.get("seconds")]
    train_seconds = [float(c.train["seconds"]) for c in trained]
    if train_seconds:
        print(f"training: {len(train_seconds)} cells, {sum(train_seconds) / len(train_seconds):.0f} s each on average")
    print(f"total {time.perf_counter() - started:.0f} s; files in {workdir / 'sensitivity'}")
    if cleanup is not None:
        cleanup.cleanup()


if __name__ == "__main__":
    main()
