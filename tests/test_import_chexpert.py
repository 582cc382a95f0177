"""`clala import chexpert` through the real CLI: a MIMIC-CXR reports tree ingested with
`clala ingest --format mimic`, and `mimic-cxr-2.0.0-chexpert.csv[.gz]` written in its real form."""

import gzip
from pathlib import Path

import pytest

from labeling.store.store import Store

OBSERVATIONS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
HEADER = ["subject_id", "study_id", *OBSERVATIONS]
REPORTS = {  # (subject, study) -> text
    ("10000032", "50414267"): "FINAL REPORT\n FINDINGS: Small right effusion, basilar atelectasis. Possible edema.\n",
    ("10000032", "53189527"): "FINAL REPORT\n IMPRESSION: No acute cardiopulmonary process.\n",
    ("11000011", "51111111"): "FINAL REPORT\n IMPRESSION: Clear lungs.\n",
}


def row(subject, study, **values):
    return [subject, study, *(values.get(o.replace(" ", "_"), "") for o in OBSERVATIONS)]


ROWS = [
    row(
        "10000032",
        "50414267",
        Atelectasis="1.0",
        Lung_Opacity="1.0",
        Pleural_Effusion="1",
        Pneumothorax="0.0",
        Edema="-1.0",
        Enlarged_Cardiomediastinum="1.0",
        Support_Devices="1.0",
        Fracture="0",
        Pneumonia="-1",
    ),
    row("10000032", "53189527", No_Finding="1.0"),
    row("10000099", "59999999", Pneumothorax="1.0"),  # study not ingested
    row("10000032", "51111111", Cardiomegaly="1.0"),  # the study belongs to p11000011
]


def write_csv(path: Path, rows, header=HEADER) -> Path:
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def mimic_db(tmp_path, cli):
    root = tmp_path / "mimic"
    for (subject, study), text in REPORTS.items():
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
    db = tmp_path / "mimic.duckdb"
    code, _, err = cli("ingest", root, "--format", "mimic", "--db", db)
    assert code == 0, err
    return db


def label_rows(db, run):
    with Store(db, read_only=True) as store:
        keys = {r["report_key"]: r["study_id"] for r in store.list_reports()}
        return sorted(
            (keys[r["report_key"]], r["region"], r["finding"], r["status"], r["evidence_text"])
            for r in store.labels(run).to_pylist()
        )


EXPECTED = [
    ("50414267", None, "atelectasis", "present", None),
    ("50414267", None, "lung opacity", "present", None),
    ("50414267", None, "pleural effusion", "present", None),
    ("50414267", None, "pneumonia", "uncertain", None),
    ("50414267", None, "pneumothorax", "absent", None),
    ("50414267", None, "pulmonary edema/hazy opacity", "uncertain", None),
    ("50414267", None, "rib fracture", "absent", None),
]


@pytest.mark.parametrize("file_name", ["mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-chexpert.csv.gz"])
def test_chexpert_import_image_level(tmp_path, cli, mimic_db, file_name):
    path = write_csv(tmp_path / file_name, ROWS)
    code, out, err = cli("import", "chexpert", path, "--name", "chexpert", "--db", mimic_db)
    assert code == 0, err
    # A positive for a broad observation lands on the finding it names only, never on every
    # specific finding it covers: Lung Opacity -> lung opacity, not consolidation, pneumonia, ...
    assert label_rows(mimic_db, "chexpert") == EXPECTED
    with Store(mimic_db, read_only=True) as store:
        run = store.run("chexpert")
        keys = {r["study_id"]: r["report_key"] for r in store.list_reports()}
        covered = store.covered_reports("chexpert").tolist()
    assert covered == sorted([keys["50414267"], keys["53189527"]])  # "No Finding" study: covered, no label
    assert run.kind.value == "import" and run.source == str(path.resolve())
    assert run.params["kind"] == "chexpert" and run.params["rows"] == 4 and len(run.params["sha256"]) == 64
    assert run.params["mapping"]["Lung Opacity"] == "lung opacity"
    assert run.params["mapping"]["Enlarged Cardiomediastinum"] is None
    assert run.params["not_stored"] == {
        "Enlarged Cardiomediastinum": {"present": 1},
        "No Finding": {"present": 1},
        "Support Devices": {"present": 1},
    }
    assert run.params["skipped"] == {
        "study not in the database": 1,
        "subject_id differs from the stored report's patient": 1,
    }
    assert "2 reports, 7 labels (absent 2, present 3, uncertain 2)" in out
    assert (
        "observations with no single finding, not stored: Enlarged Cardiomediastinum: present 1; "
        "No Finding: present 1; Support Devices: present 1"
    ) in out


def test_chexpert_devices_enabled_still_not_spread(tmp_path, cli, mimic_db):
    path = write_csv(tmp_path / "chexpert.csv", ROWS[:1])
    code, out, err = cli(
        "import",
        "chexpert",
        path,
        "--name",
        "cx-devices",
        "--db",
        mimic_db,
        "--enable",
        "tubesandlines",
        "--enable",
        "device",
    )
    assert code == 0, err
    assert label_rows(mimic_db, "cx-devices") == EXPECTED
    with Store(mimic_db, read_only=True) as store:
        assert store.run("cx-devices").params["not_stored"]["Support Devices"] == {"present": 1}


@pytest.mark.parametrize(
    "header, rows, message",
    [
        ([*HEADER, "Foo"], [ROWS[0] + ["1.0"]], "line 1: column 'Foo' is not a CheXpert observation"),
        (HEADER, [ROWS[1], row("10000032", "50414267", Edema="2.0")], "line 3: column 'Edema': '2.0' is not 1, 0, -1"),
        (HEADER[1:], [r[1:] for r in ROWS], "line 1: column 'subject_id' is missing"),
        (HEADER, [ROWS[0], ["10000032", "s5041x"] + ROWS[0][2:]], "line 3: column 'study_id': 's5041x'"),
    ],
)
def test_chexpert_bad_input_stores_nothing(tmp_path, cli, mimic_db, header, rows, message):
    path = write_csv(tmp_path / "chexpert.csv", rows, header=header)
    before = mimic_db.read_bytes()
    code, out, err = cli("import", "chexpert", path, "--name", "chexpert", "--db", mimic_db)
    assert code == 1
    assert err.strip().count("\n") == 0 and f"{path}: {message}" in err
    with Store(mimic_db, read_only=True) as store:
        assert store.runs() == []
    assert mimic_db.read_bytes() == before


def test_mimic_rows_without_header_by_position(tmp_path, cli, mimic_db):
    # MIMIC's file with its header line cut off: positions say where the ids and labels are.
    path = tmp_path / "chexpert-noheader.csv"
    path.write_text("\n".join(",".join(r) for r in ROWS) + "\n")
    columns = ",".join(f"{name}={index}" for index, name in enumerate(HEADER))
    code, out, err = cli(
        "import", "chexpert", path, "--name", "chexpert", "--no-header", "--columns", columns, "--db", mimic_db
    )
    assert code == 0, err
    assert label_rows(mimic_db, "chexpert") == EXPECTED
    with Store(mimic_db, read_only=True) as store:
        params = store.run("chexpert").params
    assert params["matched_by"] == "study_id" and params["positions"]["Edema"] == 5
    assert params["skipped"] == {
        "study not in the database": 1,
        "subject_id differs from the stored report's patient": 1,
    }
