"""Shared by the benchmark scripts (run as `python bench/NAME.py`, so this folder is on the path)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from labeling.sources.rules import reading_sentences
from labeling.store.run_records import record_run
from labeling.store.store import Store
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary


def clala(*args: object) -> str:
    """Run a clala command in a fresh process (as a user would); its stdout, or exit with its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if result.returncode:
        raise SystemExit(f"clala {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


def synth_cohort(workdir: Path, n: int, seed: int, size: int) -> tuple[Path, Path]:
    """A `clala synth` cohort in WORKDIR/cohort, ingested with its gold imported (runs
    gold-report, gold-image) into WORKDIR/bench.duckdb; steps already done are skipped."""
    cohort, db = workdir / "cohort", workdir / "bench.duckdb"
    if not (cohort / "synth_gold.jsonl").exists():
        clala("synth", "--n", n, "--out", cohort, "--seed", seed, "--size", size, "--workers", 2)
    if not db.exists():
        clala("ingest", cohort / "files", "--format", "mimic", "--db", db)
        clala("import", "synth-gold", cohort, "--name", "gold", "--db", db)
    return cohort, db


def bench_workdir(keep: Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """The folder for a run's databases: `--keep DIR` (kept), else a temporary one (and its cleanup)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep, None
    cleanup = tempfile.TemporaryDirectory(prefix="clala-bench-")
    return Path(cleanup.name), cleanup


def keyword_baseline(db: Path, name: str) -> None:
    """Every finding synonym in a reading sentence -> present, in the finding's default regions."""
    vocab = load_vocabulary()
    with Store(db) as store:
        keys = store.current_report_keys()
        sentences = reading_sentences(store, keys)
        cells = {}
        for key, offset, text in zip(
            sentences["report_key"].to_pylist(), sentences["start_char"].to_pylist(), sentences["text"].to_pylist()
        ):
            for start, end, finding in vocab.find_findings(text):
                for region in vocab.finding(finding).default_regions:
                    cells.setdefault((key, region, finding), (offset + start, offset + end, text[start:end]))
        rows = [(k, r, f, *e) for (k, r, f), e in cells.items()]
        record_run(
            store,
            RunSpec(name=name, kind=RunKind.rules, vocabulary_version=vocab.version, backend="keywords", model=None),
            keys,
            pa.table(
                {
                    "report_key": [r[0] for r in rows],
                    "region": [r[1] for r in rows],
                    "finding": [r[2] for r in rows],
                    "status": ["present"] * len(rows),
                    "evidence_start": [r[3] for r in rows],
                    "evidence_end": [r[4] for r in rows],
                    "evidence_text": [r[5] for r in rows],
                }
            ),
        )
