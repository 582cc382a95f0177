"""`clala sensitivity` end to end on a tiny real grid (drop 0 and 0.5, one seed, one real source)
with the tiny CLALA-Net of test_trainer.py: every cell stored in experiments with its spec, label
quality and model metrics; drop 0.5 halves label recall; a rerun trains nothing; the CSV, the
table and the plot hold the same numbers; bad input is one line, exit 1, nothing written."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_trainer import LESIONS, make_cohort

from labeling.store.store import Store
from model.experiments.commands import show_sensitivity
from model.experiments.sensitivity import (
    CELL_KEY_FIELD,
    LabelSpec,
    SensitivityGrid,
    derived_run_name,
    grid_cells,
    parse_rates,
)


def show_grid(cohort: Path, db: Path, out: Path):
    """`show_sensitivity` on the grid `cli_args` describes."""
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    grid = SensitivityGrid(
        data=str(cohort),
        db=str(db),
        base="gold-report",
        reference="gold-report",
        drop=parse_rates("0,0.5", "--drop"),
        sources=["gold-image"],
        seeds=[0],
        findings=list(LESIONS),
        out=str(out),
    )
    settings = {k: v for k, v in TINY_OPTIONS.items() if k not in ("backbone", "d_model", "model_option")}
    model = model_settings(
        TINY_OPTIONS["model_option"],
        backbone=TINY_OPTIONS["backbone"],
        d_model=TINY_OPTIONS["d_model"],
        no_decoder=True,
    )
    template = TrainConfig(run="(per cell)", data=str(cohort), db=str(db), **settings, model=model)
    return show_sensitivity(grid, template)


TINY_OPTIONS: dict[str, Any] = dict(
    epochs=2,
    image_size=64,
    batch_size=8,
    lr=3e-3,
    patience=0,
    backbone="test_resnet",
    d_model=32,
    threads=2,
    model_option=["lca_heads=2", "lca_feedforward_dim=64", "llcl_projection_dim=16", "use_itcl=false"],
)


def cli_args(cohort: Path, db: Path, out: Path) -> list:
    args = [
        "sensitivity",
        "--data",
        cohort,
        "--db",
        db,
        "--base",
        "gold-report",
        "--reference",
        "gold-report",
        "--drop",
        "0,0.5",
        "--sources",
        "gold-image",
        "--seeds",
        1,
        "--out",
        out,
        "--findings",
        LESIONS[0],
        "--findings",
        LESIONS[1],
    ]
    for key, value in TINY_OPTIONS.items():
        if key == "model_option":
            for item in value:
                args += ["--model-option", item]
        else:
            args += [f"--{key.replace('_', '-')}", value]
    return args


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    from typer.testing import CliRunner

    from cli import app

    root = tmp_path_factory.mktemp("sensitivity")
    cohort, db = make_cohort(root, n=60, seed=8, valid=12, test=14)
    out = root / "grid"
    started = time.perf_counter()
    result = CliRunner().invoke(app, [str(a) for a in cli_args(cohort, db, out)], catch_exceptions=False)
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.stdout + result.stderr
    return cohort, db, out, result.stdout, seconds


def cell_rows(db: Path) -> list[dict]:
    with Store(db, read_only=True) as store:
        return [e for e in store.experiments() if CELL_KEY_FIELD in (e["label_spec"] or {})]


@pytest.mark.slow  # the grid trains three cells: about 30 s
def test_every_cell_is_an_experiment_with_spec_quality_and_model_metrics(grid_run):
    _, db, out, stdout, _ = grid_run
    rows = cell_rows(db)
    assert sorted((r["label_spec"]["series"], r["label_spec"]["setting"]) for r in rows) == [
        ("drop", "0"),
        ("drop", "0.5"),
        ("source", "gold-image"),
    ]
    for row in rows:
        assert row["status"] == "complete"
        spec = row["label_spec"]
        assert {
            CELL_KEY_FIELD,
            "series",
            "setting",
            "rate",
            "seed",
            "spec",
            "derived_run",
            "reference",
            "split",
            "findings",
        } <= set(spec)
        assert spec["reference"] == "gold-report" and spec["split"] == "test" and spec["findings"] == LESIONS
        assert set(row["metrics"]) == {"label_quality", "model", "train"}
        model = row["metrics"]["model"]
        assert 0 <= model["mean_lesion_f1"] <= 1 and model["images"] == 14
        assert row["metrics"]["train"]["epochs_run"] == 2
        assert Path(row["checkpoint_path"]).is_file()
        with Store(db, read_only=True) as store:
            derived = store.run(spec["derived_run"])
        assert derived.kind.value == "derived" and derived.params["spec"] == spec["spec"]
    by_setting = {r["label_spec"]["setting"]: r for r in rows}
    clean = by_setting["0"]["metrics"]["label_quality"]["region"]
    assert clean["precision"] == clean["recall"] == clean["f1"] == 1.0
    dropped = by_setting["0.5"]["metrics"]["label_quality"]["region"]
    assert dropped["precision"] == 1.0 and abs(dropped["recall"] - 0.5) < 0.12, dropped
    # gold-image says what the phantom shows, not what the report says: imperfect against gold-report.
    assert by_setting["gold-image"]["metrics"]["label_quality"]["region"]["f1"] < 1.0
    assert by_setting["gold-image"]["label_spec"]["spec"]["source"] == "gold-image"
    assert "model mean lesion F1" in stdout and "3 trained now" in stdout


@pytest.mark.slow  # the grid trains three cells: about 30 s
def test_rerun_trains_nothing_and_files_table_and_plot_agree(grid_run):
    cohort, db, out, stdout, first_seconds = grid_run
    before = {r["experiment_id"]: r["updated_at"] for r in cell_rows(db)}
    with Store(db, read_only=True) as store:
        experiments_before = len(store.experiments())
    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/*.pt")}
    assert len(checkpoints) == 6  # best.pt and last.pt of three cells
    started = time.perf_counter()
    result = show_grid(cohort, db, out)
    seconds = time.perf_counter() - started
    assert [c.outcome for c in result.cells] == ["reused"] * 3
    with Store(db, read_only=True) as store:
        assert len(store.experiments()) == experiments_before
    assert {r["experiment_id"]: r["updated_at"] for r in cell_rows(db)} == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/*.pt")} == checkpoints
    assert seconds < first_seconds / 2, (seconds, first_seconds)

    # The CSV holds the summary rows; the table printed the same numbers; the plot drew them.
    with result.csv_path.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(w["series"], w["setting"]) for w in written] == [(r.series, r.setting) for r in result.rows]
    for line, row in zip(written, result.rows):
        assert float(line["model_f1_mean"]) == pytest.approx(row.model_f1_mean, abs=1e-6)
        assert float(line["label_f1_mean"]) == pytest.approx(row.label_f1_mean, abs=1e-6)
        assert line["label_f1_std"] == "" and math.isnan(row.model_f1_std)  # one seed: no spread
        assert f"{row.model_f1_mean:.3f}" in stdout and f"{row.label_f1_mean:.3f}" in stdout
    drop_rows = [r for r in result.rows if r.series == "drop"]
    assert result.plotted["drop"]["x"] == [r.label_f1_mean for r in drop_rows]
    assert result.plotted["drop"]["y"] == [r.model_f1_mean for r in drop_rows]
    assert result.plotted["source"]["labels"] == ["gold-image"]
    assert result.plotted["source"]["y"] == [r.model_f1_mean for r in result.rows if r.series == "source"]
    with Image.open(result.png_path) as image:
        assert image.format == "PNG" and image.size == (750, 550)
    with result.cells_csv_path.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3


@pytest.mark.slow  # the grid trains three cells: about 30 s
def test_a_cell_stopped_after_training_is_evaluated_not_retrained(grid_run):
    cohort, db, out, _, _ = grid_run
    row = next(r for r in cell_rows(db) if r["label_spec"]["setting"] == "0.5")
    with Store(db) as store:  # as if killed between training and evaluation
        store.update_experiment(row["experiment_id"], status="running")
        trainings = sum(1 for e in store.experiments() if e["name"].startswith("sensitivity drop 0.5"))
    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/*.pt")}
    result = show_grid(cohort, db, out)
    assert [c.outcome for c in result.cells] == ["reused", "evaluated", "reused"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/*.pt")} == checkpoints
    with Store(db, read_only=True) as store:
        assert sum(1 for e in store.experiments() if e["name"].startswith("sensitivity drop 0.5")) == trainings
    again = next(r for r in cell_rows(db) if r["experiment_id"] == row["experiment_id"])
    assert again["status"] == "complete"
    assert again["metrics"]["model"]["mean_lesion_f1"] == pytest.approx(row["metrics"]["model"]["mean_lesion_f1"])


def test_grid_cells_share_the_clean_base_and_name_derived_runs_by_spec():
    grid = SensitivityGrid(
        data=".", db="x", base="b", reference="r", drop=[0, 0.2], add=[0], sources=["b", "s"], seeds=[0, 1]
    )
    cells = grid_cells(grid)
    assert [(c.series, c.setting, c.seed) for c in cells][:4] == [
        ("drop", "0", 0),
        ("drop", "0", 1),
        ("drop", "0.2", 0),
        ("drop", "0.2", 1),
    ]
    clean = LabelSpec(source="b")
    # Rate 0 of every kind and the base as a source are one spec, whatever the seed.
    assert {c.spec for c in cells if c.setting in ("0", "b")} == {clean}  # pyright: ignore[reportUnhashable]  (frozen model)
    assert cells[2].spec.seed == 0 and cells[3].spec.seed == 1 and cells[3].spec.drop == 0.2
    assert derived_run_name(cells[3].spec).startswith("sens:b:drop0.2:s1:")
    assert derived_run_name(clean).startswith("sens:b:clean:")
    assert derived_run_name(cells[2].spec) != derived_run_name(cells[3].spec)
    assert parse_rates("0, 0.1,0.1", "--drop") == [0.0, 0.1]


@pytest.mark.slow  # the grid trains three cells: about 30 s
def test_bad_input_is_one_line_and_writes_nothing(grid_run, tmp_path, cli):
    cohort, db, _, _, _ = grid_run
    out = tmp_path / "never"
    for extra, message in (
        (["--drop", "0,abc"], "--drop: 'abc' is not a number"),
        (["--drop", "1.5"], "--drop: 1.5 is not a rate"),
        (["--base", "nope", "--drop", "0.1"], "no run named 'nope'"),
        (["--sources", "nope,gold-image"], "no run named 'nope'"),
        ([], "nothing to train"),
    ):
        args = [
            "sensitivity",
            "--data",
            cohort,
            "--db",
            db,
            "--base",
            "gold-report",
            "--reference",
            "gold-report",
            "--out",
            out,
            "--seeds",
            1,
            *extra,
        ]
        code, stdout, err = cli(*args)
        assert code == 1, (extra, stdout, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
