import json

import pytest

from labeling.core.errors import InputError
from labeling.ingest.readers import Columns, detect_format, read_csv, read_iu_xray, read_jsonl, read_mimic

IU_HEADER = "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"


def write_iu(folder):
    csv_path = folder / "indiana_reports.csv"
    csv_path.write_text(
        IU_HEADER + "7,Cardiomegaly/mild,Cardiomegaly,Xray Chest PA and Lateral,Dyspnea.,None.,"
        '"Mild cardiomegaly. No effusion.",Cardiomegaly.\n' + "8,normal,normal,Xray Chest PA and Lateral,,,,\n"
    )
    (folder / "indiana_projections.csv").write_text(
        "uid,filename,projection\n7,7_IM-0001-1001.dcm.png,Frontal\n7,7_IM-0001-2001.dcm.png,Lateral\n"
    )
    return csv_path


def test_detect_format(tmp_path):
    assert detect_format(write_iu(tmp_path)) == "iu-xray"
    plain = tmp_path / "plain.csv"
    plain.write_text("id,text\n1,x\n")
    assert detect_format(plain) == "csv"
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    assert detect_format(tmp_path) == "mimic"
    with pytest.raises(InputError, match="--format"):
        detect_format(tmp_path / "reports.txt")


def test_iu_xray_text_sections_images_and_metadata(tmp_path):
    reports = read_iu_xray(write_iu(tmp_path), "iu_xray")
    first, blank = reports
    assert first.report_id == "7"
    assert first.text == (
        "INDICATION: Dyspnea.\nCOMPARISON: None.\nFINDINGS: Mild cardiomegaly. No effusion.\nIMPRESSION: Cardiomegaly."
    )
    assert first.image_paths == ["7_IM-0001-1001.dcm.png", "7_IM-0001-2001.dcm.png"]
    assert first.metadata["MeSH"] == "Cardiomegaly/mild"
    assert blank.text == ""  # no report text at all; validation decides what to do with it


def test_csv_custom_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('study,body,subject,imgs,site\nA1,"Lungs clear.\nNo effusion.",P9,a.jpg;b.jpg,north\n')
    [report] = read_csv(path, Columns(id="study", text="body", patient="subject", images="imgs"), "mine")
    assert (report.report_id, report.patient_id, report.image_paths) == ("A1", "P9", ["a.jpg", "b.jpg"])
    assert report.text == "Lungs clear.\nNo effusion."
    assert report.metadata == {"site": "north"}
    assert report.source.endswith("mine.csv: line 2")  # where the record starts (it ends on line 3)


def test_jsonl_fields_and_errors(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"rid": 12, "report": "Clear lungs.", "images": ["x.png"]}) + "\n\n")
    [report] = read_jsonl(path, Columns(id="rid", text="report", images="images"), "d")
    assert (report.report_id, report.image_paths) == ("12", ["x.png"])
    path.write_text('{"rid": 1, "report": "ok"}\n{"rid": 2, "report": \n')
    with pytest.raises(InputError, match=r"r.jsonl: line 2: not valid JSON"):
        read_jsonl(path, Columns(id="rid", text="report"), "d")
    path.write_text('{"rid": 1, "body": "ok"}\n')
    with pytest.raises(InputError, match=r"line 1: no field 'report'.*--text-col"):
        read_jsonl(path, Columns(id="rid", text="report"), "d")


def test_mimic_tree(tmp_path):
    study = tmp_path / "files" / "p10" / "p10000032"
    study.mkdir(parents=True)
    (study / "s50414267.txt").write_text("FINAL REPORT\nFINDINGS: Clear.\n")
    (study / "s50414267").mkdir()
    (study / "s50414267" / "02aa804e-bde0afdd.jpg").write_bytes(b"")
    (study / "notes.txt").write_text("not a report")
    [report] = read_mimic(tmp_path, "mimic-cxr")
    assert (report.report_id, report.patient_id, report.study_id) == ("50414267", "10000032", "50414267")
    assert report.image_paths == ["files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg"]
    with pytest.raises(InputError, match="no MIMIC-CXR report files"):
        read_mimic(study / "s50414267", "mimic-cxr")
