"""`clala audit`: a run's cells ranked by confident learning (cleanlab) on out-of-sample
probabilities, on real DuckDB files holding a synthetic cohort's gold; the audited run is the gold
with a few cells corrupted, the sources are noisy copies of the gold and their Dawid-Skene
combination; the K-fold source trains the tiny CLALA-Net on a tiny cohort."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from labeling.ingest import IngestOptions, ingest
from labeling.review import audit_cells, rank_cells, run_probabilities
from labeling.sources.combine import CombineRequest, combine_runs
from labeling.sources.imports import ImportRequest, import_labels
from labeling.store.run_records import record_run
from labeling.store.store import Store
from model.synth.writer import generate_cohort
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

FLIP = {"present": "absent", "absent": "present"}
CORRUPTED_PRESENT, CORRUPTED_UNMENTIONED = 6, 6


def store_run(store: Store, name: str, rows: list[dict], keys: list[int]) -> None:
    columns = {c: [r[c] for r in rows] for c in ("report_key", "region", "finding", "status")}
    spec = RunSpec(name=name, kind=RunKind.imported, vocabulary_version=load_vocabulary().version, backend="test")
    record_run(store, spec, keys, pa.table(columns))


def noisy(rows: list[dict], rate: float, seed: int) -> list[dict]:
    """`rows` with present and absent swapped at `rate` (seeded)."""
    draw = np.random.default_rng(seed).random(len(rows))
    return [
        {**r, "status": FLIP.get(r["status"], r["status"]) if u < rate else r["status"]} for r, u in zip(rows, draw)
    ]


def corrupt(store: Store, gold: list[dict], seed: int) -> tuple[list[dict], set[tuple]]:
    """The gold with CORRUPTED_PRESENT present cells made absent and CORRUPTED_UNMENTIONED
    unmentioned allowed cells (of findings the gold labels) made present; the corrupted cells."""
    vocabulary = load_vocabulary()
    rng = np.random.default_rng(seed)
    present = [i for i, r in enumerate(gold) if r["status"] == "present"]
    flipped = set(rng.choice(present, CORRUPTED_PRESENT, replace=False).tolist())
    rows = [{**r, "status": "absent"} if i in flipped else r for i, r in enumerate(gold)]
    labeled = {(r["report_key"], r["region"], r["finding"]) for r in gold}
    findings = sorted({r["finding"] for r in gold})
    keys = store.covered_reports("gold-report").tolist()
    added: set[tuple] = set()
    while len(added) < CORRUPTED_UNMENTIONED:
        finding = findings[rng.integers(len(findings))]
        regions = [r for r in vocabulary.region_names if vocabulary.allows(finding, r)]
        cell = (int(keys[rng.integers(len(keys))]), regions[rng.integers(len(regions))], finding)
        if cell not in labeled and cell not in added:
            added.add(cell)
    rows += [{"report_key": k, "region": g, "finding": f, "status": "present"} for k, g, f in sorted(added)]
    changed = {(gold[i]["report_key"], gold[i]["region"], gold[i]["finding"]) for i in flipped} | added
    return rows, changed


@pytest.fixture(scope="module")
def audit_db(tmp_path_factory) -> tuple[Path, set[tuple]]:
    """A 120-study cohort's gold, the gold with 12 cells corrupted (run `corrupted`), three noisy
    copies of the gold (3 % of present/absent swapped) and their Dawid-Skene combination."""
    folder = tmp_path_factory.mktemp("audit")
    cohort = generate_cohort(folder / "cohort", 120, seed=3, size=64)
    db = folder / "audit.duckdb"
    with Store(db) as store:
        ingest(store, cohort / "files", IngestOptions(format="mimic"))
        import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
        gold = [
            r for r in store.labels("gold-report").select(["report_key", "region", "finding", "status"]).to_pylist()
        ]
        keys = store.covered_reports("gold-report").tolist()
        rows, changed = corrupt(store, gold, seed=7)
        store_run(store, "corrupted", rows, keys)
        for i, name in enumerate(("noisy-a", "noisy-b", "noisy-c")):
            store_run(store, name, noisy(gold, 0.03, seed=10 + i), keys)
        combine_runs(store, CombineRequest(name="combined", runs=["noisy-a", "noisy-b", "noisy-c"]))
    return db, changed


@pytest.fixture
def db(audit_db: tuple[Path, set[tuple]], tmp_path: Path) -> Path:
    copy = tmp_path / "test.duckdb"
    shutil.copy(audit_db[0], copy)
    return copy


def top_cells(queue: pa.Table, k: int) -> set[tuple]:
    rows = queue.slice(0, k).select(["report_key", "region", "finding"]).to_pylist()
    return {(r["report_key"], r["region"], r["finding"]) for r in rows}


def test_corrupted_cells_rank_first_by_two_noisy_copies(db: Path, audit_db):
    """Each noisy copy errs on about 17 cells, but both err on the same cell rarely: a cell both
    contradict (p 0 or 1 in the mean) ranks above one only one of them contradicts (p 0.5)."""
    changed = audit_db[1]
    with Store(db, read_only=True) as store:
        cells = audit_cells(store, "corrupted", load_vocabulary())
        sources = [run_probabilities(store, name, cells) for name in ("noisy-a", "noisy-b")]
        result = rank_cells(store, cells, sources)
    queue = result.queue
    # The corrupted cells both copies contradict (neither copy swapped that cell itself) come first.
    row_of = {int(key): i for i, key in enumerate(cells.report_keys)}
    both = set()
    for key, region, finding in changed:
        at = (row_of[key], cells.regions.index(region), cells.findings.index(finding))
        given = cells.codes[at] == 1
        if all(abs(given - s.p_present[at]) >= 0.95 for s in sources):
            both.add((key, region, finding))
    assert len(both) >= 8 and top_cells(queue, len(both)) == both  # 10 of the 12 measured
    assert len(top_cells(queue, len(changed)) & changed) >= len(changed) - 2  # 20,011 cells ranked
    assert queue.num_rows == result.audited - result.without_probability
    assert result.uncertain == int((cells.codes == -1)[np.broadcast_to(cells.allowed, cells.codes.shape)].sum())
    rows = queue.to_pylist()
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    # flagged first, then by suspicion descending within each group
    flags = [r["flagged"] for r in rows]
    assert flags == sorted(flags, reverse=True) and 0 < result.flagged < len(rows)
    for group in (True, False):
        suspicion = [r["suspicion"] for r in rows if r["flagged"] is group]
        assert suspicion == sorted(suspicion, reverse=True)
    first = rows[0]
    assert first["given"] in ("present", "absent", "unmentioned")
    mean = np.mean([first["p_present:noisy-a"], first["p_present:noisy-b"]])
    assert first["p_present"] == pytest.approx(mean, abs=1e-6)
    assert first["disagrees_most"] in ("noisy-a", "noisy-b") and first["disagrees_most"] in first["reason"]
    assert f"given {first['given']}" in first["reason"]
    worst = first[f"p_present:{first['disagrees_most']}"]
    other = first["p_present:noisy-b" if first["disagrees_most"] == "noisy-a" else "p_present:noisy-a"]
    assert worst <= other if first["given"] == "present" else worst >= other
    assert f"p(present) {worst:.3f}" in first["reason"]
    assert all(r["reason"].endswith("flagged by confident learning") == r["flagged"] for r in rows)
    # every audited cell appears once
    assert len({(r["report_key"], r["region"], r["finding"]) for r in rows}) == len(rows)


def test_the_combined_posterior_ranks_the_corrupted_cells_first(db: Path, audit_db):
    changed = audit_db[1]
    with Store(db, read_only=True) as store:
        cells = audit_cells(store, "corrupted", load_vocabulary())
        source = run_probabilities(store, "combined", cells)
        result = rank_cells(store, cells, [source])
    # 11 of the 12 in the top 12 and all 12 in the top 15 of 20,011 measured: the others near the
    # top are cells where Dawid-Skene itself is wrong (two of the three copies swapped the cell).
    assert len(top_cells(result.queue, len(changed)) & changed) >= 10
    assert changed <= top_cells(result.queue, len(changed) + 3)
    # The combined run's confidence is the posterior of its status: p(present) = 1 - it on absent cells.
    p = source.p_present[~np.isnan(source.p_present)]
    assert ((p >= 0) & (p <= 1)).all() and 0.04 < np.median(p) < 0.06  # most cells unmentioned -> 0.05


def test_the_command_writes_the_queue_and_label_studio_tasks(db: Path, audit_db, tmp_path: Path):
    changed = audit_db[1]
    out, tasks_dir = tmp_path / "queue.csv", tmp_path / "review"
    args = ["audit", "corrupted", "--by", "noisy-a", "--by", "noisy-b", "--out", out, "--db", db]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--labelstudio", tasks_dir, "--review", 12]])
    assert result.exit_code == 0, result.output
    assert "flagged by confident learning" in result.stdout
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0])
    assert columns[:14] == [
        *("rank", "dataset", "report_id", "study_id", "report_key", "region", "finding", "given"),
        *("suspicion", "label_quality", "flagged", "p_present", "disagrees_most", "reason"),
    ]
    assert columns[14:] == ["p_present:noisy-a", "p_present:noisy-b"]
    top = {(int(r["report_key"]), r["region"], r["finding"]) for r in rows[: len(changed)]}
    assert len(top & changed) >= len(changed) - 2  # as rank_cells ranks them (first test)
    assert all(0 <= float(r["suspicion"]) <= 1 for r in rows)

    jsonl = tmp_path / "queue.jsonl"
    again = CliRunner().invoke(app, [str(a) for a in [*args[:-4], "--out", jsonl, "--db", db, "--limit", 20]])
    assert again.exit_code == 0, again.output
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 20 and [r["report_key"] for r in lines] == [int(r["report_key"]) for r in rows[:20]]

    tasks = json.loads((tasks_dir / "tasks.json").read_text())
    reports = list(dict.fromkeys(int(r["report_key"]) for r in rows[:12]))  # reports of the top 12, first seen order
    assert [t["data"]["report_key"] for t in tasks] == reports
    ranks = [t["data"]["audit_rank"] for t in tasks]
    assert ranks == sorted(ranks) and ranks[0] == 1
    for task in tasks:
        assert task["data"]["text"] and task["predictions"][0]["model_version"] == "corrupted"
        checks = task["data"]["check"].splitlines()
        mine = [r for r in rows[:12] if int(r["report_key"]) == task["data"]["report_key"]]
        assert len(checks) == len(mine) and checks[0].startswith(f"#{mine[0]['rank']} {mine[0]['finding']} |")
        for result_item in task["predictions"][0]["result"]:
            value = result_item["value"]
            assert task["data"]["text"][value["start"] : value["end"]] == value["text"]
    config = ET.parse(tasks_dir / "labeling_config.xml").getroot()
    assert any("$check" in (h.get("value") or "") for h in config.iter("Header"))
    assert {c.get("name") for c in config.iter("Choices")} == {"region", "status", "severity", "temporal"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--by", "noisy-a", "--out", "{tmp}/q.txt"], "a review queue is written as .csv or .jsonl"),
        (["--by", "nope", "--out", "{tmp}/q.csv"], "nope"),
        (["--by", "corrupted", "--out", "{tmp}/q.csv"], "--by corrupted: is the audited run itself"),
        (["--out", "{tmp}/q.csv"], "no probability source"),
        (["--folds", "3", "--out", "{tmp}/q.csv"], "--data: the images are needed"),
        (["--by", "{tmp}/missing.pt", "--out", "{tmp}/q.csv", "--data", "{tmp}"], "checkpoint file not found"),
        (["--by", "noisy-a", "--out", "{tmp}/q.csv", "--limit", "0"], "--limit: 0 must be at least 1"),
        (["--by", "noisy-a", "--out", "{tmp}/q.csv", "--unmentioned-p", "2"], "--unmentioned-p: 2.0 is not"),
        (["--by", "noisy-a", "--out", "{tmp}/no/q.csv"], "does not exist"),
        (["--by", "noisy-a", "--out", "{tmp}/link.csv"], "an output never replaces a database"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(db: Path, tmp_path: Path, extra: list[str], message: str):
    (tmp_path / "link.csv").symlink_to(db)  # a queue path that leads to the database
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(tmp=tmp_path) for a in extra]
    result = CliRunner().invoke(app, ["audit", "corrupted", *args, "--db", str(db)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_without_region_labels_is_refused(db: Path, tmp_path: Path):
    with Store(db) as store:
        keys = store.covered_reports("gold-report").tolist()
        store_run(store, "image-only", [{"report_key": keys[0], "region": None, "finding": "atelectasis",
                                          "status": "present"}], keys)  # fmt: skip
    result = CliRunner().invoke(app, ["audit", "image-only", "--by", "noisy-a", "--out", str(tmp_path / "q.csv"),
                                      "--db", str(db)])  # fmt: skip
    assert result.exit_code == 1 and "has no region-level labels" in result.stderr


def test_k_fold_cross_fitting_predicts_each_report_by_the_model_that_never_saw_it(tmp_path: Path):
    """Two folds, one epoch each, the tiny CLALA-Net (about 20 s): every audited cell gets exactly one
    probability, from the fold whose model held its report out of training and validation."""
    from test_sensitivity import TINY_OPTIONS
    from test_trainer import make_cohort

    from labeling.review import audit_cells
    from model.train.checkpoint import load_checkpoint
    from model.train.config import TrainConfig
    from model.train.loop import load_training_data

    cohort, db = make_cohort(tmp_path, n=40, valid=10, test=6)
    out, folds = tmp_path / "queue.csv", tmp_path / "folds"
    options = [f"--model-option={o}" for o in TINY_OPTIONS["model_option"]]
    args = [
        *("audit", "gold-report", "--folds", "2", "--data", cohort, "--db", db, "--out", out),
        *("--checkpoint-dir", folds, "--epochs", 1, "--image-size", 64, "--batch-size", 8, "--lr", 3e-3),
        *("--patience", 0, "--backbone", "test_resnet", "--d-model", 32, "--threads", 2, "--device", "cpu"),
    ]
    result = CliRunner().invoke(app, [str(a) for a in args] + options)
    assert result.exit_code == 0, result.output
    assert "fold 1/2" in result.stderr and "fold 2/2" in result.stderr
    assert "folds Platt-scaled on their validation images, findings per fold:" in result.stdout

    with Store(db, read_only=True) as store:
        cells = audit_cells(store, "gold-report", load_vocabulary())
    held = []
    for k in (1, 2):
        saved = load_checkpoint(folds / f"fold-{k}" / "best.pt")["train_config"]
        held.append(set(saved["holdout_reports"]))
        # the model of fold k trained and validated on no image of a held-out report
        data = load_training_data(TrainConfig.from_dict(saved))
        seen = set(data.train.examples.report_keys.tolist()) | set(data.valid.examples.report_keys.tolist())
        assert seen and not (seen & held[-1])
    assert not (held[0] & held[1]) and held[0] | held[1] == set(cells.report_keys.tolist())
    assert abs(len(held[0]) - len(held[1])) <= 1

    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0])[-1] == "p_present:folds"
    cells_seen = [(int(r["report_key"]), r["region"], r["finding"]) for r in rows]
    assert len(set(cells_seen)) == len(cells_seen)  # one probability per cell
    audited = int(cells.audited.sum())
    assert len(rows) == audited  # every synthetic region box is valid: every audited cell is predicted
    assert all(0 < float(r["p_present:folds"]) < 1 for r in rows)

    # A second audit reuses both folds' checkpoints and gives the same queue.
    again = CliRunner().invoke(app, [str(a) for a in args] + options)
    assert again.exit_code == 0 and "folds 1, 2: their checkpoints were there already" in again.stdout
    with out.open(newline="") as handle:
        assert [r["p_present:folds"] for r in csv.DictReader(handle)] == [r["p_present:folds"] for r in rows]
