"""Label Studio review: a reviewer can clear a label's region, severity or change (item 19 of
issue 12). The labeling config uses checkboxes that can be unchecked for them, and an annotation
whose region, severity or change is cleared comes back as an image-level label, no severity, no
change."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import test_labelstudio
from test_labelstudio import accept_predictions, export, import_file, label_rows

run_a = test_labelstudio.run_a  # the fixture: a run "A" with seven labels over three reports


def controls(config_path) -> dict[str | None, dict[str, str]]:
    root = ET.parse(config_path).getroot()
    return {c.get("name"): dict(c.attrib) for c in root.iter("Choices")}


def test_optional_choices_can_be_unchecked_status_stays_required(tmp_path, db, cli, run_a):
    export(cli, db, tmp_path / "ls")
    choices = controls(tmp_path / "ls" / "labeling_config.xml")
    # `single-radio` cannot be cleared in Label Studio once set; `single` checkboxes can.
    assert {name: choices[name]["choice"] for name in choices} == {
        "region": "single",
        "status": "single-radio",
        "severity": "single",
        "temporal": "single",
    }
    assert choices["status"].get("required") == "true"
    assert all("required" not in choices[name] for name in ("region", "severity", "temporal"))
    headers = [h.get("value") for h in ET.parse(tmp_path / "ls" / "labeling_config.xml").getroot().iter("Header")]
    assert "region (uncheck for an image-level label)" in headers


def clear(result: list[dict], region_id: str, control: str, *, how: str) -> None:
    """What Label Studio's export holds once a reviewer unchecks `control` of a region: the result
    item is gone (`how="drop"`), or, as some versions write it, left with no choice (`"empty"`)."""
    if how == "drop":
        result[:] = [r for r in result if not (r["id"] == region_id and r["from_name"] == control)]
    else:
        for item in result:
            if item["id"] == region_id and item["from_name"] == control:
                item["value"]["choices"] = []
                item["origin"] = "prediction-changed"


def region_of(result: list[dict], finding: str, region: str | None = None) -> str:
    ids = {r["id"] for r in result if r["from_name"] == "finding" and r["value"]["labels"] == [finding]}
    if region is not None:
        ids &= {r["id"] for r in result if r["from_name"] == "region" and r["value"]["choices"] == [region]}
    (region_id,) = ids
    return region_id


def test_cleared_region_severity_and_change_import_as_none(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    r1 = next(t for t in tasks if t["data"]["report_key"] == run_a["r1"])
    result = r1["annotations"][0]["result"]
    right = region_of(result, "pleural effusion", "right lung")
    cardio = region_of(result, "enlarged cardiac silhouette")
    clear(result, right, "severity", how="drop")  # a wrong severity removed
    clear(result, right, "temporal", how="empty")  # and the change
    clear(result, cardio, "region", how="empty")  # cardiomegaly made image level
    clear(result, cardio, "severity", how="drop")
    r2 = next(t for t in tasks if t["data"]["report_key"] == run_a["r2"])
    scoliosis = region_of(r2["annotations"][0]["result"], "scoliosis")
    clear(r2["annotations"][0]["result"], scoliosis, "region", how="drop")

    code, out, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 0, err
    got = {(r[0], r[1], r[2]): r[3:6] for r in label_rows(db, "reviewed")}
    k1, k2 = run_a["r1"], run_a["r2"]
    assert got[(k1, "right lung", "pleural effusion")] == ("present", None, None)
    assert got[(k1, "left lung", "pleural effusion")] == ("present", "mild", "worsened")  # untouched
    assert got[(k1, None, "enlarged cardiac silhouette")] == ("present", None, None)
    assert (k1, "cardiac silhouette", "enlarged cardiac silhouette") not in got
    assert got[(k2, None, "scoliosis")] == ("present", None, None)
    assert (k2, "spine", "scoliosis") not in got
    assert len(got) == 7
    # The evidence of a label made image level is kept.
    evidence = {(r[0], r[1], r[2]): r[8] for r in label_rows(db, "reviewed")}
    assert evidence[(k1, None, "enlarged cardiac silhouette")] == "Mild cardiomegaly"


def test_cleared_status_is_refused(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    result = tasks[0]["annotations"][0]["result"]
    first = next(r["id"] for r in result if r["from_name"] == "finding")
    clear(result, first, "status", how="empty")
    code, _, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 1 and f"task {tasks[0]['id']}" in err and "needs a status" in err
    assert err.strip().count("\n") == 0


def test_two_choices_for_one_control_are_refused(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    result = tasks[0]["annotations"][0]["result"]
    item = next(r for r in result if r["from_name"] == "region")
    item["value"]["choices"] = ["right lung", "left lung"]
    code, _, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 1 and "expected one choice" in err and "'right lung', 'left lung'" in err
