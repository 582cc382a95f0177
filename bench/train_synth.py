"""Benchmark: CLALA-Net trained from a synthetic cohort's gold labels, on CPU, and its ablation.

Steps, all through the real commands and functions:
  1. `clala synth --n N --size S --seed SEED` (default prevalence), `clala ingest DIR/files --format
     mimic`, `clala import synth-gold DIR --name gold` (runs gold-report and gold-image);
  2. `model.experiments.ablation.ablate`: full / no-LCA / no-LLCL / no-ITCL trained from `gold-report` with the
     same data, seeds and settings; each best checkpoint evaluated on the test split against
     `gold-report`;
  3. the full model also scored against `gold-image` (what the phantom really shows).

Why `gold-report`: a label run made from reports is what the trainer is for (any label source is
report-derived), it has uncertain statements for the uncertainty policy, and its evidence
sentences are what ITCL (and the decoder) learn from; `gold-image` has no sentences, so ITCL
would have nothing to contrast and its ablation would be empty.

The figure is mean lesion F1 on the test split (mean over lesions with a positive test cell) against
the best constant prediction (every allowed cell positive) on the same cells, as a ratio.

    python bench/train_synth.py [--n 3100] [--size 128] [--image-size 128] [--epochs 4]
        [--backbone resnet18] [--batch-size 16] [--threads N] [--keep DIR]

The decoder is off (it does not change lesion recognition; `bench/model_step.py` states its cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import bench_workdir, synth_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=3100, help="studies in the cohort (about 2,000 train images after images_to_avoid)"
    )
    parser.add_argument("--size", type=int, default=128, help="phantom image height")
    parser.add_argument("--image-size", type=int, default=128, help="training image size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the cohort, database and checkpoints here")
    args = parser.parse_args()

    from labeling.store.store import Store
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions
    from model.experiments.ablation import ablate
    from model.train.config import TrainConfig

    workdir, cleanup = bench_workdir(args.keep)
    started = time.perf_counter()
    cohort, db = synth_cohort(workdir, args.n, args.seed, args.size)
    prepared = time.perf_counter() - started
    print(f"cohort: {args.n} studies at {args.size} px in {cohort}; prepared in {prepared:.0f} s", flush=True)

    config = TrainConfig(
        run="gold-report",
        data=str(cohort),
        db=str(db),
        name="bench-train-synth",
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        workers=args.workers,
        threads=args.threads,
        checkpoint_dir=str(workdir / "ablation"),
        model={
            "backbone": args.backbone,
            "d_model": args.d_model,
            "use_decoder": False,
            "text_hidden_size": 64,
            "text_layers": 1,
            "lca_feedforward_dim": 2 * args.d_model,
            "llcl_projection_dim": 64,
            "itcl_projection_dim": 64,
        },
    )

    def progress(variant: str, event: dict) -> None:
        if event["event"] == "start":
            print(
                f"[{variant}] {event['train_images']} train / {event['valid_images']} valid images, "
                f"{len(event['lesions'])} lesions, {event['parameters']:,} parameters, "
                f"{event['steps_per_epoch']} steps per epoch",
                flush=True,
            )
        elif event["event"] == "epoch":
            terms = " ".join(f"{k} {v:.3f}" for k, v in event["train"].items())
            print(
                f"[{variant}] epoch {event['epoch']}: {terms} | valid mean lesion F1 "
                f"{event['valid_mean_lesion_f1']:.3f} (constant {event['valid_baseline_f1']:.3f})",
                flush=True,
            )

    rows = ablate(config, args.variants, reference="gold-report", split="test", on_progress=progress)
    full = next((row for row in rows if row.variant == "full"), rows[0])
    options = InferenceOptions(full.checkpoint, cohort, split="test", batch_size=args.batch_size)
    with Store(db, read_only=True) as store:
        image_truth = evaluate(store, EvaluateRequest(options, "gold-image", record=False))

    print()
    print(
        f"test split vs gold-report, {full.variant} model: mean lesion F1 {full.mean_lesion_f1:.3f}, constant "
        f"baseline {full.baseline_mean_lesion_f1:.3f}, ratio {full.mean_lesion_f1 / full.baseline_mean_lesion_f1:.2f}"
    )
    print(
        f"test split vs gold-image:  mean lesion F1 {image_truth.mean_lesion_f1:.3f}, constant baseline "
        f"{image_truth.baseline_mean_lesion_f1:.3f}, ratio {image_truth.ratio_to_baseline:.2f}"
    )
    print()
    print(
        "| variant | mean lesion F1 | ratio to constant | image-level F1 | valid F1 | best epoch | parameters "
        "| train s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.variant} | {row.mean_lesion_f1:.3f} | {row.mean_lesion_f1 / row.baseline_mean_lesion_f1:.2f} | "
            f"{row.image_mean_f1:.3f} | {row.valid_mean_lesion_f1:.3f} | {row.best_epoch} | {row.parameters:,} | "
            f"{row.train_seconds:.0f} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if cleanup is not None:
        cleanup.cleanup()


if __name__ == "__main__":
    main()
