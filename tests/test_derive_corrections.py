"""`clala derive SOURCE --corrections REVIEWED`: a reviewed run's reports replace the source's cells,
on real DuckDB files holding a synthetic cohort's gold and a rules run; the reviewed run comes back
through the real Label Studio export and import."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import labeled_cohort_db

from labeling.sources.combine import CombineRequest, combine_runs
from labeling.store.run_records import record_run
from labeling.store.store import Store
from model.experiments.sensitivity import ensure_derived_run, find_derived_run
from model.labels.label_specs import DeriveRequest, LabelSpec, derive_run
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

REVIEWED_REPORTS = 25


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory) -> Path:
    """A 120-study synthetic cohort: gold imported (gold-report, gold-image), a rules run."""
    return labeled_cohort_db(tmp_path_factory.mktemp("corrections"), 120, seed=5)


@pytest.fixture
def db(cohort_db: Path, tmp_path: Path) -> Path:
    copy_path = tmp_path / "test.duckdb"
    shutil.copy(cohort_db, copy_path)
    return copy_path


def cells(store: Store, run: str, keys: set[int] | None = None) -> dict[tuple, str]:
    rows = store.labels(run).to_pylist()
    return {
        (r["report_key"], r["region"], r["finding"]): r["status"]
        for r in rows
        if r["region"] is not None and (keys is None or r["report_key"] in keys)
    }


def store_reviewed(store: Store, name: str, keys: list[int]) -> None:
    """A human run holding the gold's region labels of `keys` (what a reviewer who fixed every
    label of those reports leaves)."""
    wanted = set(keys)
    rows = [r for r in store.labels("gold-report").to_pylist() if r["report_key"] in wanted and r["region"]]
    columns = {c: [r[c] for r in rows] for c in ("report_key", "region", "finding", "status", "severity", "temporal")}
    spec = RunSpec(name=name, kind=RunKind.human, vocabulary_version=load_vocabulary().version, backend="test")
    record_run(store, spec, keys, pa.table(columns))


def reviewed_keys(store: Store) -> list[int]:
    """Reports where the rules and the gold disagree most: the ones worth reviewing."""
    gold, rules = cells(store, "gold-report"), cells(store, "rules")
    wrong: dict[int, int] = {}
    for cell in set(gold) | set(rules):
        if gold.get(cell) != rules.get(cell):
            wrong[cell[0]] = wrong.get(cell[0], 0) + 1
    return sorted(sorted(wrong, key=lambda k: (-wrong[k], k))[:REVIEWED_REPORTS])


def test_reviewed_reports_take_the_reviewed_cells_and_the_rest_keep_the_source(db: Path):
    with Store(db) as store:
        keys = reviewed_keys(store)
        store_reviewed(store, "reviewed", keys)
        result = derive_run(
            store,
            DeriveRequest("corrected", LabelSpec(source="rules"), reference="gold-report", corrections="reviewed"),
        )
        plain = derive_run(store, DeriveRequest("plain", LabelSpec(source="rules"), reference="gold-report"))
        reviewed_set = set(keys)
        others = set(store.covered_reports("rules").tolist()) - reviewed_set
        assert cells(store, "corrected", reviewed_set) == cells(store, "gold-report", reviewed_set)
        assert cells(store, "corrected", others) == cells(store, "rules", others)
        assert cells(store, "corrected", reviewed_set) != cells(store, "rules", reviewed_set)  # it changed something
        fixed = store.run("corrected").params["corrections"]
        rules_cells, gold_cells = cells(store, "rules", reviewed_set), cells(store, "gold-report", reviewed_set)
        added = sum(1 for c, s in gold_cells.items() if s == "present" and rules_cells.get(c) != "present")
        removed = sum(1 for c, s in rules_cells.items() if s == "present" and gold_cells.get(c) != "present")
        assert fixed["run"] == "reviewed"
        assert fixed["applied_reports"] == REVIEWED_REPORTS and fixed["outside_reports"] == 0
        assert (fixed["present_added"], fixed["present_removed"]) == (added, removed)
        assert fixed["cells_changed"] >= added + removed > 0
    corrected_f1 = result.details["quality"].region["f1"]
    plain_f1 = plain.details["quality"].region["f1"]
    assert plain_f1 < corrected_f1 < 1.0


def test_corrections_win_over_the_spec_corruptions_and_carry_the_reviewed_rows(db: Path):
    with Store(db) as store:
        keys = reviewed_keys(store)[:10]
        store_reviewed(store, "reviewed", keys)
        derive_run(
            store, DeriveRequest("noisy", LabelSpec(source="rules", drop=0.5, add=0.05, seed=3), corrections="reviewed")
        )
        reviewed_set = set(keys)
        assert cells(store, "noisy", reviewed_set) == cells(store, "gold-report", reviewed_set)
        rows = [r for r in store.labels("noisy").to_pylist() if r["report_key"] in reviewed_set]
        gold_rows = {
            (r["report_key"], r["region"], r["finding"]): r
            for r in store.labels("gold-report").to_pylist()
            if r["report_key"] in reviewed_set and r["region"]
        }
        for row in rows:
            origin = gold_rows[(row["report_key"], row["region"], row["finding"])]
            assert (row["severity"], row["temporal"]) == (origin["severity"], origin["temporal"])
        counts = store.run("noisy").params["counts"]
        assert counts["dropped"] > 0 and counts["added"] > 0  # the spec still acted on the other reports


def test_reviewed_reports_outside_the_source_are_counted_not_added(db: Path):
    with Store(db) as store:
        covered = store.covered_reports("rules").tolist()
        store_reviewed(store, "reviewed", covered[:8])
        kept = derive_run(
            store, DeriveRequest("half", LabelSpec(source="rules", keep=0.5, seed=1), corrections="reviewed")
        )
        held = set(store.covered_reports("half").tolist())
        fixed = store.run("half").params["corrections"]
        inside = len(held & set(covered[:8]))
        assert fixed["applied_reports"] == inside and fixed["outside_reports"] == 8 - inside
        assert len(held) == kept.reports == len(covered) // 2
        if fixed["outside_reports"]:
            assert any("not corrected" in note for note in store.run("half").params["notes"])


def test_a_corrected_run_is_never_reused_as_a_plain_derivation(db: Path):
    with Store(db) as store:
        store_reviewed(store, "reviewed", reviewed_keys(store)[:5])
        derive_run(store, DeriveRequest("corrected", LabelSpec(source="rules"), corrections="reviewed"))
        assert find_derived_run(store, LabelSpec(source="rules")) is None
        name = ensure_derived_run(store, LabelSpec(source="rules"), "gold-report")
        assert name != "corrected" and "corrections" not in store.run(name).params


def test_a_run_derived_before_region_less_labels_were_carried_is_not_reused(db: Path):
    """Derived runs stored before DERIVATION_VERSION 2 lack the source's region-less labels: the
    same spec gets a new run (with another name) that has them."""
    with Store(db) as store:
        spec = LabelSpec(source="rules")
        old = ensure_derived_run(store, spec, "gold-report")
        params = dict(store.run(old).params)
        del params["derivation"]  # as stored by the earlier version
        store.set_run_params(store.run(old).run_id, params)
        assert find_derived_run(store, spec) is None
        new = ensure_derived_run(store, spec, "gold-report")
        assert new != old and store.run(new).params["derivation"] == 2
        assert find_derived_run(store, spec) == new
        placeless = store.con.execute(
            "SELECT count(*) FROM labels JOIN runs USING (run_id) WHERE name = ? AND region IS NULL", [new]
        ).fetchall()[0][0]
        assert placeless > 0


def test_combined_corrected_and_reviewed_runs_are_sensitivity_sources(db: Path):
    """What `clala sensitivity --sources` does with each source: a clean derived run of it, whose
    cells are the source's region cells."""
    with Store(db) as store:
        store_reviewed(store, "reviewed", reviewed_keys(store))
        combine_runs(
            store, CombineRequest(name="combined", runs=["rules", "gold-image", "reviewed"], method="majority")
        )
        derive_run(store, DeriveRequest("corrected", LabelSpec(source="rules"), corrections="reviewed"))
        for source in ("combined", "corrected", "reviewed"):
            name = ensure_derived_run(store, LabelSpec(source=source), "gold-report")
            assert cells(store, name) == cells(store, source)
            assert np.array_equal(store.covered_reports(name), store.covered_reports(source))


def test_cli_label_studio_review_becomes_corrections(db: Path, cli, tmp_path: Path):
    """The loop with the real files: export the gold as tasks, accept them as a reviewer would,
    import them as the reviewed run, derive the rules run with the corrections."""
    out = tmp_path / "ls"
    code, _, err = cli("export-labelstudio", "gold-report", "--out", out, "--db", db, "--limit", "12")
    assert code == 0, err
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    for number, task in enumerate(tasks, start=1):
        task["id"] = number
        task["annotations"] = [{"id": number, "result": copy.deepcopy(task["predictions"][0]["result"])}]
    export = tmp_path / "reviewed.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    code, _, err = cli("import", "labelstudio", export, "--name", "reviewed", "--db", db)
    assert code == 0, err
    code, stdout, err = cli(
        "derive",
        "rules",
        "--name",
        "rules+review",
        "--corrections",
        "reviewed",
        "--reference",
        "gold-report",
        "--db",
        db,
    )
    assert code == 0, err
    assert "corrections from reviewed: 12 reviewed reports replace the source's cells" in stdout
    with Store(db, read_only=True) as store:
        keys = set(store.covered_reports("reviewed").tolist())
        assert len(keys) == 12
        assert cells(store, "rules+review", keys) == cells(store, "reviewed", keys)


@pytest.mark.parametrize(
    ("corrections", "message"),
    [
        ("nope", "nope"),
        ("rules", "is the source run itself"),
        ("image-only", "image-level labels only"),
        ("elsewhere", "covers none of the reports"),
    ],
)
def test_bad_corrections_are_one_line_and_write_nothing(db: Path, cli, corrections: str, message: str):
    with Store(db) as store:
        spec = RunSpec(name="elsewhere", kind=RunKind.human, vocabulary_version=load_vocabulary().version)
        record_run(store, spec, [], {"report_key": [], "region": [], "finding": [], "status": []})
        key = int(store.covered_reports("rules")[0])
        spec = RunSpec(name="image-only", kind=RunKind.imported, vocabulary_version=load_vocabulary().version)
        image_row = {"report_key": [key], "region": pa.array([None], pa.string()), "finding": ["pleural effusion"]}
        record_run(store, spec, [key], {**image_row, "status": ["present"]})
        before = [run.name for run in store.runs()]
    code, stdout, err = cli("derive", "rules", "--name", "x", "--corrections", corrections, "--db", db)
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1
    with Store(db, read_only=True) as store:
        assert [run.name for run in store.runs()] == before


def placeless(store: Store, run: str, keys: set[int] | None = None) -> dict[tuple[int, str], str]:
    """A run's region-less labels (the no-location rule: "no pneumothorax") by (report, finding)."""
    return {
        (r["report_key"], r["finding"]): r["status"]
        for r in store.labels(run).to_pylist()
        if r["region"] is None and (keys is None or r["report_key"] in keys)
    }


def test_a_reviewed_report_replaces_the_region_less_labels_too(db: Path):
    """The reviewed report wins wholesale: its region-less labels replace the source's (a source's
    "no X" the reviewer left out is gone, one the reviewer turned present is present, with the
    reviewer's evidence); the other reports keep the source's region-less labels."""
    with Store(db) as store:
        rules_placeless = placeless(store, "rules")
        keys = sorted({k for k, _ in rules_placeless})[:6]
        reviewed_set = set(keys)
        first, flipped = keys[0], next(f for (k, f), s in sorted(rules_placeless.items()) if k == keys[0])
        assert rules_placeless[(first, flipped)] == "absent"
        region_rows = [
            r for r in store.labels("gold-report").to_pylist() if r["report_key"] in reviewed_set and r["region"]
        ]
        table = pa.table(
            {
                "report_key": [r["report_key"] for r in region_rows] + [first],
                "region": pa.array([r["region"] for r in region_rows] + [None], pa.string()),
                "finding": [r["finding"] for r in region_rows] + [flipped],
                "status": [r["status"] for r in region_rows] + ["present"],
                "evidence_text": [None] * len(region_rows) + ["the reviewer's word"],
            }
        )
        spec = RunSpec(name="reviewed", kind=RunKind.human, vocabulary_version=load_vocabulary().version)
        record_run(store, spec, keys, table)
        derive_run(store, DeriveRequest("corrected", LabelSpec(source="rules"), corrections="reviewed"))
        others = set(store.covered_reports("rules").tolist()) - reviewed_set
        assert placeless(store, "corrected", reviewed_set) == {(first, flipped): "present"}
        assert placeless(store, "corrected", others) == placeless(store, "rules", others)
        assert len(placeless(store, "rules", others)) > 0
        row = next(r for r in store.labels("corrected").to_pylist() if r["region"] is None and r["report_key"] == first)
        assert row["evidence_text"] == "the reviewer's word"
        fixed = store.run("corrected").params["corrections"]
        rules_cells, gold_cells = cells(store, "rules", reviewed_set), cells(store, "gold-report", reviewed_set)
        region_changed = sum(1 for c in set(rules_cells) | set(gold_cells) if rules_cells.get(c) != gold_cells.get(c))
        region_less_changed = len(placeless(store, "rules", reviewed_set))  # each one is gone or flipped
        assert fixed["cells_changed"] == region_changed + region_less_changed
        region_added = sum(1 for c, s in gold_cells.items() if s == "present" and rules_cells.get(c) != "present")
        assert fixed["present_added"] == region_added + 1  # the flipped region-less label
