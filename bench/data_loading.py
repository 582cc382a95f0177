"""Benchmark: images per second through `model.data.dataset.RegionDataset` (DataLoader, 2 workers,
batch 8) at 224 and 512 pixels, against plain PIL decoding of the same files in one process,
measured in the same run on a synthetic cohort ingested and imported like real data.

    python bench/data_loading.py [--n 96] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import bench_workdir
from PIL import Image
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.sources.imports import ImportRequest, import_labels
from labeling.store.store import Store
from model.data.dataset import RegionDataset, collate, load_cohort
from model.synth.writer import generate_cohort

console = Console(soft_wrap=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=96, help="studies in the cohort")
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort and database into DIR and keep them")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    try:
        table = Table(title=f"RegionDataset, {args.n} images, 2 workers, batch 8")
        for column in ("size", "dataset images/s", "PIL decode images/s", "dataset / decode"):
            table.add_column(column, justify="right")
        for size in (224, 512):
            out = workdir / f"cohort_{size}"
            db = workdir / f"bench_{size}.duckdb"
            generate_cohort(out, args.n, seed=0, size=size, image_format="jpg")
            with Store(db) as store:
                ingest(store, out / "files", IngestOptions(format="mimic"))
                import_labels(store, ImportRequest("synth-gold", out, "gold"))
            with Store(db, read_only=True) as store:
                dataset = RegionDataset.from_store(store, load_cohort(out, out, None), "gold-report", image_size=size)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=8, num_workers=2, collate_fn=collate, persistent_workers=True
            )
            for _ in loader:  # start the workers and warm the page cache
                pass
            t0 = time.perf_counter()
            images = sum(len(batch["dicom_id"]) for batch in loader)
            dataset_s = time.perf_counter() - t0
            paths = [record.image_path for record in dataset.examples.records]
            t0 = time.perf_counter()
            for path in paths:
                with Image.open(path) as image:
                    image.load()
            decode_s = time.perf_counter() - t0
            table.add_row(
                str(size),
                f"{images / dataset_s:,.0f}",
                f"{len(paths) / decode_s:,.0f}",
                f"{(images / dataset_s) / (len(paths) / decode_s):.2f}x",
            )
        console.print(table)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
