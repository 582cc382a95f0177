"""`clala import mesh`: IU X-ray MeSH codes as an import run, on a fixture in the real format and
on the real file when it is present."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import IU_REPORTS, needs_iu_xray

from labeling.sources.imports import ImportRequest, import_labels
from labeling.sources.imports.mesh import check_mapping, shipped_mapping
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

HEADER = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
ROWS = [
    [
        "1",
        "Opacity/lung/base/left;Cardiomegaly/mild",
        "Opacity;Cardiomegaly",
        "Xray Chest PA and Lateral",
        "Cough.",
        "None.",
        "Left basilar opacity. Mildly enlarged heart.",
        "Left base opacity.",
    ],
    [
        "2",
        "normal",
        "normal",
        "Xray Chest PA and Lateral",
        "Screening.",
        "None.",
        "Lungs are clear.",
        "No acute disease.",
    ],
    [
        "3",
        "Technical Quality of Image Unsatisfactory;Markings/bronchovascular;Pleural Effusion/bilateral/small",
        "Pleural Effusion",
        "Xray Chest PA",
        "Dyspnea.",
        "None.",
        "Small bilateral effusions.",
        "Effusions.",
    ],
    ["4", "No Indexing", "No Indexing", "Xray Chest PA", "Pain.", "None.", "Heart and lungs normal.", "Normal."],
    [
        "5",
        "Cardiomegaly/borderline;Pulmonary Congestion;Pulmonary Congestion/mild",
        "Cardiomegaly",
        "Xray Chest PA",
        "CHF.",
        "None.",
        "Borderline heart size. Vascular congestion.",
        "Congestion.",
    ],
    ["6", "Pneumothorax/apex/right", "Pneumothorax", "Xray Chest PA", "", "", "", ""],  # blank: not ingested
]


def write_iu_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def iu_db(tmp_path: Path, db: Path, cli) -> tuple[Path, Path]:
    source = write_iu_csv(tmp_path / "indiana_reports.csv", ROWS)
    code, _, err = cli("ingest", source, "--format", "iu-xray", "--db", db)
    assert code == 0, err
    return source, db


def test_mapping_names_only_vocabulary_findings_and_regions():
    check_mapping(shipped_mapping(), load_vocabulary())  # raises on an unknown name


def test_fixture_import_gives_exact_rows(iu_db, cli):
    source, db = iu_db
    code, out, err = cli("import", "mesh", source, "--name", "mesh", "--db", db)
    assert code == 0, err
    with Store(db, read_only=True) as store:
        rows = store.labels("mesh").to_pylist()
        covered = store.covered_reports("mesh")
        keys = {r["report_id"]: r["report_key"] for r in store.list_reports(limit=100)}
        run = store.run("mesh")
    got = sorted((r["report_id"], r["region"] or "", r["finding"], r["status"], r["severity"]) for r in rows)
    assert got == sorted(
        [
            ("1", "left lower lung zone", "lung opacity", "present", None),
            ("1", "cardiac silhouette", "enlarged cardiac silhouette", "present", "mild"),
            ("3", "right lung", "pleural effusion", "present", None),
            ("3", "left lung", "pleural effusion", "present", None),
            ("5", "cardiac silhouette", "enlarged cardiac silhouette", "uncertain", None),  # borderline
            # an unlocated code is an image-level row; the two congestion codes merge, mild kept
            ("5", "", "vascular congestion", "present", "mild"),
        ]
    )
    assert all(r["evidence_start"] is None and r["confidence"] is None for r in rows)
    # normal (2) is covered with no rows; No Indexing (4) and the blank report (6) are not.
    assert sorted(covered.tolist()) == sorted([keys["1"], keys["2"], keys["3"], keys["5"]])
    assert run.kind.value == "import" and run.source == str(source.resolve())
    assert len(run.params["file_sha256"]) == 64 and len(run.params["mapping_sha256"]) == 64
    assert "4 reports, 6 labels" in out
    for listed in (
        "Technical Quality of Image Unsatisfactory",
        "Markings",
        "No Indexing",
        "uid 4",
        "not in the database",
        "uid 6",
    ):
        assert listed in out


def test_import_result_counts_skipped_codes(iu_db):
    source, db = iu_db
    with Store(db) as store:
        result = import_labels(store, ImportRequest("mesh", source, "mesh"))
    assert result.reports == 4 and result.labels == 6
    assert result.statuses == {"present": 5, "uncertain": 1}
    counts = result.skipped.counts
    assert counts["Technical Quality of Image Unsatisfactory: image quality, not a finding"] == 1
    assert counts["Markings: bronchovascular markings: no Chest ImaGenome counterpart"] == 1
    assert sum(n for reason, n in counts.items() if reason.startswith("No Indexing")) == 1
    assert sum(n for reason, n in counts.items() if reason.startswith("uid not in the database")) == 1
    assert result.skipped.total == 4


@pytest.mark.parametrize("mesh", ["Opacity//left", "Opacity/lung;;Cardiomegaly", "Cardiomegaly/"])
def test_empty_part_fails_whole_import_naming_line_and_code(tmp_path, db, cli, mesh):
    rows = [ROWS[0], ["7", mesh, "", "Xray", "Cough.", "None.", "Opacity.", "Opacity."]]
    source = write_iu_csv(tmp_path / "indiana_reports.csv", rows)
    assert cli("ingest", source, "--format", "iu-xray", "--db", db)[0] == 0
    code, _, err = cli("import", "mesh", source, "--name", "mesh", "--db", db)
    assert code == 1
    assert str(source) in err and "line 3" in err and "empty part" in err
    assert len(err.strip().splitlines()) == 1
    with Store(db, read_only=True) as store:
        assert store.runs() == []  # nothing half-stored


def test_nothing_matching_is_an_error(tmp_path, db, cli):
    source = write_iu_csv(tmp_path / "indiana_reports.csv", ROWS)
    other = tmp_path / "other.csv"
    other.write_text("id,text\nx,Heart normal.\n", encoding="utf-8")
    assert cli("ingest", other, "--db", db)[0] == 0
    code, _, err = cli("import", "mesh", source, "--name", "mesh", "--db", db)
    assert code == 1 and "ingest" in err and "iu_xray" in err


@needs_iu_xray
def test_real_iu_xray_totals(tmp_path, cli):
    db = tmp_path / "iu.duckdb"
    assert cli("ingest", IU_REPORTS, "--db", db)[0] == 0
    with Store(db) as store:
        result = import_labels(store, ImportRequest("mesh", IU_REPORTS, "mesh"))

    # Independent counts from the CSV itself.
    with IU_REPORTS.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    text_columns = ("indication", "comparison", "findings", "impression")
    ingested = [r for r in rows if any((r[c] or "").strip() for c in text_columns)]
    covered = [r for r in ingested if r["MeSH"].strip() != "No Indexing"]
    codes = [c.strip() for r in covered for c in r["MeSH"].split(";") if c.strip() not in ("normal", "No Indexing")]
    technical = sum(c == "Technical Quality of Image Unsatisfactory" for c in codes)
    catheters = sum(c.split("/")[0] == "Catheters, Indwelling" for c in codes)

    def enlarged_heart_code(code: str) -> bool:
        term, *qualifiers = code.strip().split("/")
        return "borderline" not in qualifiers and (
            term == "Cardiomegaly"
            or (term in ("Cardiac Shadow", "Heart Atria", "Heart Ventricles") and "enlarged" in qualifiers)
        )

    enlarged_heart = {r["uid"] for r in covered if any(map(enlarged_heart_code, r["MeSH"].split(";")))}
    left_base_opacity = {
        r["uid"] for r in covered if any(c.strip().startswith("Opacity/lung/base/left") for c in r["MeSH"].split(";"))
    }

    assert result.reports == len(covered)
    assert result.details["codes"].startswith(f"{len(codes):,} finding codes")
    mapped = int(result.details["codes"].split(", ")[1].split()[0].replace(",", ""))
    skipped_codes = sum(
        n for reason, n in result.skipped.counts.items() if not reason.startswith(("No Indexing", "uid not in"))
    )
    assert mapped + skipped_codes == len(codes)
    assert result.skipped.counts["Technical Quality of Image Unsatisfactory: image quality, not a finding"] == technical
    assert result.skipped.counts["Catheters, Indwelling: catheter of unnamed type"] == catheters
    assert sum(n for reason, n in result.skipped.counts.items() if reason.startswith("uid not in the database")) == len(
        rows
    ) - len(ingested)
    with Store(db, read_only=True) as store:
        labels = store.labels("mesh").to_pylist()
    assert len(labels) == result.labels
    assert {
        r["report_id"] for r in labels if r["finding"] == "enlarged cardiac silhouette" and r["status"] == "present"
    } == enlarged_heart
    assert left_base_opacity <= {
        r["report_id"] for r in labels if r["finding"] == "lung opacity" and r["region"] == "left lower lung zone"
    }
    assert all(r["status"] in ("present", "uncertain") for r in labels)
