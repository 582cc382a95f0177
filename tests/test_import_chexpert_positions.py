"""`clala import chexpert` of the CheXpert labeler's own files (item 22 of issue 12): its output
with its header (`Reports,No Finding,...`: the report text, then the labels), the same rows
without a header row (`--no-header`, the labeler's column order), and any other header-less
layout (`--no-header --columns NAME=POSITION,...`). Reports are matched by text or id."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from labeling.sources.imports.chexpert import LABELER_ORDER
from labeling.store.store import Store

OBSERVATIONS = LABELER_ORDER[1:]
REPORTS = {  # report id -> text, as ingested
    "a1": "Heart size is normal and the lungs are clear. No edema, no effusion.",
    "a2": "1. Small left pleural effusion with adjacent atelectasis.\n\n2. Cardiomegaly, no overt edema.",
    "a3": "Patchy opacity in the lingula, may be atelectasis or consolidation.",
    "a4": "Heart size is normal and the lungs are clear. No edema, no effusion.",  # same text as a1
    "a5": "Right pneumothorax.",
}


def labels(text: str, **values: str) -> list[str]:
    """One row in the labeler's order: the text, then each observation's value or blank."""
    return [text, *(values.get(o.replace(" ", "_"), "") for o in OBSERVATIONS)]


ROWS = [
    labels(REPORTS["a1"], No_Finding="1.0", Cardiomegaly="0.0", Edema="0.0", Pleural_Effusion="0.0"),
    # The labeler's CSV holds the report as it was given; here rewrapped onto one line.
    labels(
        " ".join(REPORTS["a2"].split()),
        Cardiomegaly="1.0",
        Edema="0.0",
        Atelectasis="1.0",
        Pleural_Effusion="1.0",
    ),
    labels(REPORTS["a3"], Lung_Opacity="1.0", Consolidation="-1.0", Atelectasis="-1.0"),
    labels("A report that was never ingested.", Pneumothorax="1.0"),
]


def csv_text(rows: list[list[str]], header: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def reports_db(tmp_path: Path, cli) -> Path:
    source = tmp_path / "reports.csv"
    source.write_text(csv_text([[k, v] for k, v in REPORTS.items()], header=["id", "text"]), encoding="utf-8")
    db = tmp_path / "clala.duckdb"
    code, _, err = cli("ingest", source, "--db", db)
    assert code == 0, err
    return db


def stored(db: Path, run: str) -> tuple[list[tuple], list[str], dict]:
    with Store(db, read_only=True) as store:
        ids = {r["report_key"]: r["report_id"] for r in store.list_reports()}
        rows = sorted(
            (ids[r["report_key"]], r["region"], r["finding"], r["status"]) for r in store.labels(run).to_pylist()
        )
        covered = sorted(ids[k] for k in store.covered_reports(run).tolist())
        params = store.run(run).params
    return rows, covered, params


NORMAL = [
    (None, "enlarged cardiac silhouette", "absent"),
    (None, "pleural effusion", "absent"),
    (None, "pulmonary edema/hazy opacity", "absent"),
]
EXPECTED = sorted(
    [("a1", *cell) for cell in NORMAL]
    + [("a4", *cell) for cell in NORMAL]  # the same text: the same labels
    + [
        ("a2", None, "atelectasis", "present"),
        ("a2", None, "enlarged cardiac silhouette", "present"),
        ("a2", None, "pleural effusion", "present"),
        ("a2", None, "pulmonary edema/hazy opacity", "absent"),
        ("a3", None, "atelectasis", "uncertain"),
        ("a3", None, "consolidation", "uncertain"),
        ("a3", None, "lung opacity", "present"),
    ]
)


def test_labeler_output_without_header_matched_by_text(tmp_path, cli, reports_db):
    path = tmp_path / "labeled_reports.csv"
    path.write_text(csv_text(ROWS), encoding="utf-8")
    code, out, err = cli("import", "chexpert", path, "--name", "labeler", "--no-header", "--db", reports_db)
    assert code == 0, err
    rows, covered, params = stored(reports_db, "labeler")
    assert rows == EXPECTED
    assert covered == ["a1", "a2", "a3", "a4"]
    assert params["matched_by"] == "Reports" and params["header"] is False
    assert params["positions"] == {name: i for i, name in enumerate(LABELER_ORDER)}
    assert params["skipped"] == {"report text not in the database": 1}
    assert params["not_stored"] == {"No Finding": {"present": 1}}
    assert "reports matched by: report text (whitespace aside)" in out
    assert "column positions: Reports=0, No Finding=1, Enlarged Cardiomediastinum=2" in out


def test_labeler_output_with_its_header(tmp_path, cli, reports_db):
    path = tmp_path / "labeled_reports.csv"
    path.write_text(csv_text(ROWS, header=list(LABELER_ORDER)), encoding="utf-8")
    code, _, err = cli("import", "chexpert", path, "--name", "labeler", "--db", reports_db)
    assert code == 0, err
    rows, covered, params = stored(reports_db, "labeler")
    assert rows == EXPECTED and covered == ["a1", "a2", "a3", "a4"]
    assert params["matched_by"] == "Reports" and params["header"] is True and params["positions"] is None


def test_positions_by_report_id(tmp_path, cli, reports_db):
    # Report id first, then three observations in an order of the user's choosing; a trailing
    # column that --columns does not name is not read.
    path = tmp_path / "ids.csv"
    path.write_text("a5,1,,0,note\na2,,1.0,-1,note\nzz9,1,1,1,note\n", encoding="utf-8")
    code, out, err = cli(
        "import",
        "chexpert",
        path,
        "--name",
        "by-id",
        "--no-header",
        "--columns",
        "report_id=0, Pneumothorax=1,Pleural Effusion=2,Edema=3",
        "--db",
        reports_db,
    )
    assert code == 0, err
    rows, covered, params = stored(reports_db, "by-id")
    assert rows == [
        ("a2", None, "pleural effusion", "present"),
        ("a2", None, "pulmonary edema/hazy opacity", "uncertain"),
        ("a5", None, "pneumothorax", "present"),
        ("a5", None, "pulmonary edema/hazy opacity", "absent"),
    ]
    assert covered == ["a2", "a5"]
    assert params["matched_by"] == "report_id"
    assert params["skipped"] == {"report id not in the database": 1}
    assert "column positions: report_id=0, Pneumothorax=1, Pleural Effusion=2, Edema=3" in out


@pytest.mark.parametrize(
    "text, options, message",
    [
        # A header-less file given without --no-header: line 1 is not taken for a header.
        (csv_text(ROWS), [], "line 1 is not a header row (it reads as a report and label values); "),
        (
            "10000032,50414267,1.0,,0\n",
            [],
            "line 1 is not a header row (none of its columns is subject_id, study_id, report_id, Reports",
        ),
        (csv_text([ROWS[0], ROWS[1][:10]]), ["--no-header"], "line 2: 10 fields, the CheXpert labeler's order has 15"),
        (
            csv_text([ROWS[0], labels("x", Edema="2")]),
            ["--no-header"],
            "line 2: column 'Edema' (position 6): '2' is not 1, 0, -1 or blank",
        ),
        (
            "a1,1\na2,1,0\n",
            ["--no-header", "--columns", "report_id=0,Edema=2"],
            "line 1: 2 fields, but --columns reads position 2 (Edema); positions count from 0",
        ),
        (
            'a1,1\n"a2\nstill a2",1\n,1\n',
            ["--no-header", "--columns", "report_id=0,Edema=1"],
            "line 4: column 'report_id' (position 0): is blank; it names the report",
        ),
        ("a1,1\n", ["--no-header", "--columns", "report_id=0,Foo=1"], "--columns: column 'Foo' is not a CheXpert"),
        ("a1,1\n", ["--no-header", "--columns", "Edema=1"], "--columns: no column names the report"),
    ],
)
def test_bad_header_less_input_names_the_line(tmp_path, cli, reports_db, text, options, message):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    before = reports_db.read_bytes()
    code, _, err = cli("import", "chexpert", path, "--name", "cx", *options, "--db", reports_db)
    assert code == 1
    assert err.strip().count("\n") == 0 and f"{path}: {message}" in err
    assert reports_db.read_bytes() == before


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("chexpert", ["--columns", "report_id=0"], "--columns: needs --no-header"),
        ("chexpert", ["--no-header", "--columns", "report_id=0,Edema"], "--columns: 'Edema' is not NAME=POSITION"),
        ("chexpert", ["--no-header", "--columns", "report_id=0,Edema=-1"], "position '-1' is not a whole number"),
        ("chexpert", ["--no-header", "--columns", "report_id=0,Edema=0"], "position 0 is given to both"),
        ("mesh", ["--no-header"], "--no-header and --columns apply to `clala import chexpert` only, not mesh"),
    ],
)
def test_bad_options_are_refused_before_reading(tmp_path, cli, reports_db, kind, options, message):
    path = tmp_path / "labels.csv"
    path.write_text("a1,1\n", encoding="utf-8")
    code, _, err = cli("import", kind, path, "--name", "cx", *options, "--db", reports_db)
    assert code == 1 and message in err and err.strip().count("\n") == 0
