"""Benchmark: synthetic cohort generation speed (studies per minute) at 224 and 512 pixels,
against writing the same number of blank images of that size (the file-writing floor) in the
same run.

    python bench/synth_generate.py [--n 60] [--format png] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import bench_workdir
from PIL import Image
from rich.console import Console
from rich.table import Table

from model.synth.writer import generate_cohort

console = Console(soft_wrap=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="studies per size")
    parser.add_argument("--format", default="png", choices=("png", "jpg"))
    parser.add_argument("--keep", type=Path, default=None, help="write the cohorts into DIR and keep them")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    try:
        table = Table(title=f"clala synth, {args.n} studies per size, {args.format}, 1 process")
        for column in (
            "size",
            "synth s",
            "studies/min",
            "blank-image writes s",
            "blank images/min",
            "synth / blank time",
        ):
            table.add_column(column, justify="right")
        for size in (224, 512):
            out = workdir / f"synth_{size}"
            t0 = time.perf_counter()
            generate_cohort(out, args.n, seed=0, size=size, image_format=args.format)
            synth_s = time.perf_counter() - t0
            blank_dir = workdir / f"blank_{size}"
            blank_dir.mkdir()
            blank = np.zeros((size, size), np.uint8)
            t0 = time.perf_counter()
            for i in range(args.n):
                image = Image.fromarray(blank, mode="L")
                if args.format == "jpg":
                    image.save(blank_dir / f"{i}.jpg", quality=95)
                else:
                    image.save(blank_dir / f"{i}.png", compress_level=3)
            blank_s = time.perf_counter() - t0
            table.add_row(
                str(size),
                f"{synth_s:.2f}",
                f"{args.n / synth_s * 60:,.0f}",
                f"{blank_s:.3f}",
                f"{args.n / blank_s * 60:,.0f}",
                f"{synth_s / blank_s:,.0f}x",
            )
        console.print(table)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
