import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLALA_SHARED_DATA", REPO.parent / "shared" / "data"))
IU_REPORTS = SHARED_DATA / "iu_xray" / "indiana_reports.csv"

needs_iu_xray = pytest.mark.skipif(not IU_REPORTS.is_file(), reason="../shared/data/iu_xray is absent")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "test.duckdb"


@pytest.fixture
def cli():
    """Run the real clala CLI in-process: cli(args) -> (exit code, stdout, stderr)."""
    from cli import app

    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def ingest_file(db: Path, path: Path, **options):
    """Ingest one file or folder into the database at `db` (`options`: IngestOptions fields)."""
    from labeling.ingest.pipeline import IngestOptions, ingest
    from labeling.store.store import Store

    with Store(db) as store:
        return ingest(store, path, IngestOptions(**options))


# A run's labels as rows, for comparing runs label by label (evidence included).
RUN_LABELS = """SELECT r.report_id, l.region, l.finding, l.status, l.severity, l.temporal, l.evidence_start,
                   l.evidence_end, l.evidence_text
            FROM labels l JOIN runs USING (run_id) JOIN reports r USING (report_key) WHERE name = ? ORDER BY ALL"""


def reports_db(folder: Path, texts: list[str], name: str = "reports.duckdb") -> Path:
    """A database in `folder` holding one report per text (ids r0, r1, ...; dataset "t")."""
    import json

    path = folder / "reports.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    db = folder / name
    ingest_file(db, path, dataset="t")
    return db


def stored_run(db: Path, name: str):
    """(run, its labels as RUN_LABELS rows, its work counts) of run `name`."""
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        run = store.run(name)
        return run, store.con.execute(RUN_LABELS, [name]).fetchall(), store.work_counts(run.run_id)


def clala_subprocess(*args: str, **kwargs):
    """The installed console script in a separate process (for locks and kills)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=kwargs.pop("cwd", None),
        **kwargs,
    )


@contextmanager
def holding_database(db: Path) -> Iterator[subprocess.Popen]:
    """Another process that holds `db` open (DuckDB's lock) until the block ends; yields it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import duckdb, time
                con = duckdb.connect({str(db)!r})
                print("locked", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def labeled_cohort_db(folder: Path, studies: int, seed: int) -> Path:
    """A synthetic cohort of `studies` (64 px) in `folder`, ingested, its gold imported (runs
    gold-report, gold-image) and labeled by the rules (run rules): the database's path."""
    from labeling.ingest import IngestOptions, ingest
    from labeling.sources.imports import ImportRequest, import_labels
    from labeling.sources.rules import RulesRequest, label_with_rules
    from labeling.store.store import Store
    from model.synth.writer import generate_cohort

    cohort = generate_cohort(folder / "cohort", studies, seed=seed, size=64)
    db = folder / "gold.duckdb"
    with Store(db) as store:
        ingest(store, cohort / "files", IngestOptions(format="mimic"))
        import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
        label_with_rules(store, RulesRequest(name="rules"))
    return db
