"""Benchmark: the rules labeler on one very long sentence (real-style clauses joined by commas, no
full stop) against the same text split into normal sentences, at 10k, 25k, 50k and 99k
characters (the default ingest limit is 100,000). Each measurement runs in a fresh process, so
its peak memory is its own: seconds of `RulesLabeler.label_sentences` (the best of --repeats),
the growth of the process's peak RSS over the warmed-up pipeline (MB), and the process's peak
RSS (peak MB).

- long: the one sentence, as clala labels it (cut into pieces of at most MAX_PIECE_CHARS at
  clause boundaries);
- split: the same clauses, each its own sentence ending in a full stop (the baseline);
- unbounded: the one sentence as one doc, as before the bound (quadratic; only up to
  --unbounded-up-to characters, default 25,000, since 99k took 99.5 s and 905 MB).

    python bench/rules_long_text.py [--sizes 10000,25000,50000,99000] [--unbounded-up-to 25000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CLAUSES = [
    "small left pleural effusion with adjacent atelectasis",
    "no pneumothorax is seen",
    "the heart size is normal",
    "patchy opacity in the right lower lobe may represent pneumonia",
    "stable mild cardiomegaly",
    "bibasilar opacities and atelectasis",
    "no focal consolidation",
    "mild interstitial edema has improved",
]


def clauses(n_chars: int) -> list[str]:
    parts, length, i = [], 0, 0
    while length < n_chars:
        parts.append(CLAUSES[i % len(CLAUSES)])
        length += len(parts[-1]) + 2
        i += 1
    return parts


def measure(mode: str, n_chars: int, repeats: int) -> dict:
    """In this process: seconds, peak RSS growth (MB) and labels of labeling `n_chars` in `mode`."""
    from labeling.sources.rules.labeler import RulesLabeler
    from schemas.vocabulary import load_vocabulary

    labeler = RulesLabeler(load_vocabulary(), **({"max_piece_chars": 10**9} if mode == "unbounded" else {}))
    labeler.label_sentences(["Small left pleural effusion, no pneumothorax."])  # build the pipeline
    parts = clauses(n_chars)
    texts = [part + "." for part in parts] if mode == "split" else [", ".join(parts)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings = []
    for _ in range(repeats):  # the best of a few: the machine is shared
        started = time.perf_counter()
        labels = sum(map(len, labeler.label_sentences(texts)))
        timings.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": min(timings),
        "peak_mb": (peak - before) / 1024,
        "process_mb": peak / 1024,
        "labels": labels,
        "chars": sum(map(len, texts)),
    }


def in_fresh_process(mode: str, n_chars: int, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--repeats", str(repeats), "--one", mode, str(n_chars)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="the rules labeler on one very long sentence")
    parser.add_argument("--sizes", default="10000,25000,50000,99000")
    parser.add_argument("--unbounded-up-to", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the best is shown")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "CHARS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.repeats)))
        return
    print(
        f"{'chars':>7} | {'split s':>8} {'MB':>6} | {'long s':>8} {'MB':>6} {'ratio s':>8} | "
        f"{'unbounded s':>11} {'MB':>6} {'ratio s':>8} | long s per 10k chars | peak MB split/long/unbounded"
    )
    for n in map(int, args.sizes.split(",")):
        split, long = (in_fresh_process(mode, n, args.repeats) for mode in ("split", "long"))
        row = (
            f"{n:>7,} | {split['seconds']:>8.2f} {split['peak_mb']:>6.0f} | {long['seconds']:>8.2f} "
            f"{long['peak_mb']:>6.0f} {long['seconds'] / split['seconds']:>8.2f} | "
        )
        measured = [split, long]
        if n <= args.unbounded_up_to:
            measured.append(unbounded := in_fresh_process("unbounded", n, 1))
            row += (
                f"{unbounded['seconds']:>11.2f} {unbounded['peak_mb']:>6.0f} "
                f"{unbounded['seconds'] / split['seconds']:>8.2f} | "
            )
        else:
            row += f"{'-':>11} {'-':>6} {'-':>8} | "
        peaks = "/".join(f"{m['process_mb']:.0f}" for m in measured)
        print(row + f"{long['seconds'] / n * 10_000:>20.3f} | {peaks}", flush=True)


if __name__ == "__main__":
    main()
