"""The synthetic cohort: layout, scene graphs, anatomy-derived boxes, gold, report language, seeds,
and `clala synth` -> `clala ingest` -> `clala import synth-gold` through the real CLI."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.synth.render import DEFAULT_PREVALENCE
from model.synth.reports import LOCATIONS, NOUNS
from model.synth.writer import generate_cohort, parse_prevalence, plan_cohort
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
BOOSTED = {name: 0.3 for name in DEFAULT_PREVALENCE}


def gold(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "synth_gold.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("synth") / "c", 16, seed=7, size=128, prevalence=BOOSTED)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """Many small studies for language statistics."""
    return generate_cohort(
        tmp_path_factory.mktemp("synth") / "big",
        160,
        seed=11,
        size=64,
        prevalence={name: 0.22 for name in DEFAULT_PREVALENCE},
    )


def test_layout_is_mimic_and_imagenome(cohort: Path):
    records = gold(cohort)
    assert len(records) == 16
    for r in records:
        subject, study = r["subject_id"], r["study_id"]
        report = cohort / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        assert report.read_text().lstrip().startswith("FINAL REPORT")
        assert "FINDINGS:" in report.read_text() and "IMPRESSION:" in report.read_text()
        image = cohort / r["image_path"]
        assert image.parent == report.with_suffix("") and image.name == f"{r['dicom_id']}.png"
        with Image.open(image) as im:
            assert im.mode == "L" and im.size == (r["width"], r["height"]) and r["height"] == 128
        assert (cohort / "scene_graph" / f"{r['dicom_id']}_SceneGraph.json").is_file()
    header = (cohort / "splits" / "train.csv").read_text().splitlines()[0]
    assert header == ",subject_id,study_id,dicom_id,path,ViewPosition"
    split_ids = [
        line.split(",")[3]
        for s in ("train", "valid", "test")
        for line in (cohort / "splits" / f"{s}.csv").read_text().splitlines()[1:]
    ]
    assert sorted(split_ids) == sorted(r["dicom_id"] for r in records)
    # Splits are by patient: no patient in two splits.
    by_patient = defaultdict(set)
    for r in records:
        by_patient[r["subject_id"]].add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    metadata = (cohort / "mimic-cxr-2.0.0-metadata.csv").read_text().splitlines()
    assert metadata[0].startswith("dicom_id,subject_id,study_id,") and len(metadata) == 17


def test_scene_graph_has_documented_structure(cohort: Path):
    r = gold(cohort)[0]
    graph = json.loads((cohort / "scene_graph" / f"{r['dicom_id']}_SceneGraph.json").read_text())
    assert set(graph) == {
        "image_id",
        "patient_id",
        "study_id",
        "gender",
        "reason_for_exam",
        "viewpoint",
        "objects",
        "attributes",
        "relationships",
    }
    assert [o["bbox_name"] for o in graph["objects"]] == list(VOCAB.region_names)
    scale = 224 / max(r["width"], r["height"])
    for obj in graph["objects"]:
        assert obj["object_id"] == f"{r['dicom_id']}_{obj['bbox_name']}"
        assert obj["original_width"] == obj["original_x2"] - obj["original_x1"] > 0
        # 224-scale box = original box resized (longer side 224) and padded to a centred square.
        pad_x = (224 - r["width"] * scale) / 2
        assert abs(obj["x1"] - (obj["original_x1"] * scale + pad_x)) <= 1.5
        assert abs(obj["y2"] - obj["original_y2"] * scale) <= 1.5
    for entry in graph["attributes"]:
        n = len(entry["phrases"])
        for key in (
            "attributes",
            "attributes_ids",
            "phrase_IDs",
            "sections",
            "comparison_cues",
            "temporal_cues",
            "severity_cues",
            "texture_cues",
        ):
            assert len(entry[key]) == n, key
        for attrs in entry["attributes"]:
            for attr in attrs:
                category, polarity, name = attr.split("|")
                assert polarity in ("yes", "no")
                assert category == "nlp" or VOCAB.finding(name).category == category


def test_boxes_follow_the_rendered_anatomy(cohort: Path):
    for r in gold(cohort):
        pixels = np.asarray(Image.open(cohort / r["image_path"]), dtype=np.float32)
        boxes = r["boxes"]

        def centre_mean(name: str, frac: float = 0.25, boxes=boxes, pixels=pixels) -> float:
            x1, y1, x2, y2 = boxes[name]
            dx, dy = (x2 - x1) * frac, (y2 - y1) * frac
            return float(pixels[int(y1 + dy) : int(y2 - dy), int(x1 + dx) : int(x2 - dx)].mean())

        # Aerated lung is darker than the spine and than the heart.
        for side in ("right", "left"):
            assert centre_mean(f"{side} upper lung zone") < centre_mean("spine") - 20
        assert centre_mean("right mid lung zone") < centre_mean("cardiac silhouette")
        # Radiological convention: the patient's right lung is on the image's left.
        assert boxes["right lung"][0] < boxes["left lung"][0]
        # The cardiac box's share of the thorax is the cardiothoracic ratio the phantom drew.
        thorax = boxes["left lung"][2] - boxes["right lung"][0]
        heart = boxes["cardiac silhouette"][2] - boxes["cardiac silhouette"][0]
        assert heart / thorax == pytest.approx(r["ctr"], abs=0.04)
        enlarged = any(t["finding"] == "enlarged cardiac silhouette" for t in r["image_truth"])
        assert (r["ctr"] > 0.5) == enlarged
        # Zones stack from apex to base inside their lung.
        for side in ("right", "left"):
            lung = boxes[f"{side} lung"]
            tops = [boxes[f"{side} {z} lung zone"][1] for z in ("upper", "mid", "lower")]
            assert tops == sorted(tops) and lung[1] <= tops[0] and boxes[f"{side} lower lung zone"][3] <= lung[3] + 1


def test_every_gold_lesion_lies_in_an_allowed_region_box(cohort: Path, big: Path):
    checked = 0
    for r in gold(cohort) + gold(big):
        boxes = r["boxes"]
        for lesion in r["image_truth"]:
            assert lesion["regions"], lesion
            assert set(lesion["home"]) <= set(lesion["regions"]), lesion
            for region in lesion["regions"]:
                assert VOCAB.allows(lesion["finding"], region)
                x1, y1, x2, y2 = boxes[region]
                assert any(x1 <= x < x2 and y1 <= y < y2 for x, y in lesion["centers"])
                checked += 1
        for statement in r["report_truth"]:
            for region in statement["regions"]:
                assert VOCAB.allows(statement["finding"], region), statement
            if statement["lesion"] is not None and statement["status"] != "absent":
                lesion = r["image_truth"][statement["lesion"]]
                assert lesion["finding"] == statement["finding"] and lesion["reported"]
                for region in statement["regions"]:
                    x1, y1, x2, y2 = boxes[region]
                    assert any(x1 <= x < x2 and y1 <= y < y2 for x, y in lesion["centers"]), (statement, lesion)
    assert checked > 100


def test_report_truth_evidence_is_exact(cohort: Path):
    for r in gold(cohort):
        subject = r["subject_id"]
        text = (cohort / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{r['study_id']}.txt").read_text()
        for s in r["report_truth"]:
            assert text[s["evidence_start"] : s["evidence_end"]] == s["evidence_text"]
            assert s["evidence_text"].rstrip().endswith(".")


def test_phrase_tables_name_what_the_truth_says():
    for regions, (prepositional, adjectives) in LOCATIONS.items():
        hilar = regions[0].endswith("hilar structures")
        for phrase in prepositional + [f"{a} hilar" if hilar else a for a in adjectives]:
            if phrase in ("right", "left"):
                continue  # bare side words ("small right pneumothorax"): a reader resolves them by laterality
            found = {name for _, _, names in VOCAB.find_regions(phrase) for name in names}
            assert found == set(regions), phrase
    for finding, (singular, plural, _, _) in NOUNS.items():
        for noun in singular + plural:
            if noun == "nodular density":
                continue
            assert [f for _, _, f in VOCAB.find_findings(noun)] == [finding], noun


def test_report_language_statistics(big: Path):
    records = gold(big)
    statements = [s for r in records for s in r["report_truth"]]
    status = Counter(s["status"] for s in statements)
    total = sum(status.values())
    assert 0.25 < status["absent"] / total < 0.75
    assert 0.03 < status["uncertain"] / total < 0.25
    # Several phrasings per common finding.
    phrasings = defaultdict(set)
    for s in statements:
        if s["status"] == "present":
            phrasings[s["finding"]].add(" ".join(s["evidence_text"].lower().split()))
    for finding in ("pleural effusion", "lung opacity", "enlarged cardiac silhouette", "atelectasis"):
        assert len(phrasings[finding]) >= 4, finding
    # Bilateral statements, sentences with several findings, comparisons, normal reports.
    assert any(len(s["regions"]) == 2 and s["status"] == "present" for s in statements)
    by_sentence = defaultdict(set)
    for r in records:
        for s in r["report_truth"]:
            if s["status"] == "present":
                by_sentence[(r["study_id"], s["evidence_start"])].add(s["finding"])
    assert sum(len(f) >= 2 for f in by_sentence.values()) >= 5
    assert sum(s["temporal"] is not None for s in statements) >= 5
    lesions = [lesion for r in records for lesion in r["image_truth"]]
    unreported = sum(not lesion["reported"] for lesion in lesions) / len(lesions)
    assert 0.04 < unreported < 0.25
    assert any(lesion["subtle"] and lesion["reported"] for lesion in lesions)
    normal = [r for r in records if not r["image_truth"]]
    assert normal and all(s["status"] != "present" for r in normal for s in r["report_truth"])


def test_same_seed_same_cohort(tmp_path: Path):
    a = generate_cohort(tmp_path / "a", 4, seed=5, size=64, prevalence=BOOSTED)
    b = generate_cohort(tmp_path / "b", 4, seed=5, size=64, prevalence=BOOSTED)
    c = generate_cohort(tmp_path / "c", 4, seed=6, size=64, prevalence=BOOSTED)
    assert gold(a) == gold(b) and gold(a) != gold(c)
    for r in gold(a):
        assert (a / r["image_path"]).read_bytes() == (b / r["image_path"]).read_bytes()
    # Studies draw from their own seeds: the first studies of a larger cohort are the same studies.
    d = generate_cohort(tmp_path / "d", 6, seed=5, size=64, prevalence=BOOSTED)
    assert plan_cohort(4, 5)[0] == plan_cohort(6, 5)[0]
    first = {r["study_id"]: r for r in gold(d)}
    same = [r for r in gold(a) if r["study_id"] in first]
    assert same and all(first[r["study_id"]]["report_truth"] == r["report_truth"] for r in same)


def test_prevalence_option_and_bad_input(tmp_path: Path):
    assert parse_prevalence(['{"pneumothorax": 0.5}', "mass=0.2"])["mass/nodule (not otherwise specified)"] == 0.2
    for bad in (["kidney stone=0.1"], ["pneumothorax=2"], ["{nope"], ["pneumothorax"]):
        with pytest.raises(InputError, match="--prevalence"):
            parse_prevalence(bad)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InputError, match="not empty"):
        generate_cohort(tmp_path / "full", 2, seed=0, size=64)


def test_cli_synth_ingest_import(cli, tmp_path: Path, db: Path):
    out = tmp_path / "cohort"
    code, stdout, _ = cli(
        "synth",
        "--n",
        "12",
        "--out",
        out,
        "--seed",
        "3",
        "--size",
        "96",
        "--format",
        "jpg",
        "--prevalence",
        "pleural effusion=0.5",
    )
    assert code == 0, stdout
    assert len(list(out.glob("files/p*/p*/s*/*.jpg"))) == 12
    code, stdout, _ = cli("ingest", out / "files", "--format", "mimic", "--db", db)
    assert code == 0 and "added 12" in stdout
    code, stdout, _ = cli("import", "synth-gold", out, "--name", "gold", "--db", db)
    assert code == 0, stdout
    records = gold(out)
    with Store(db, read_only=True) as store:
        keys = store.report_keys([r["study_id"] for r in records], by="study_id")
        image = store.labels("gold-image").to_pylist()
        report = store.labels("gold-report").to_pylist()
        texts = store.report_texts([k[0][1] for k in keys.values()])
    expected_image = {
        (keys[r["study_id"]][0][1], region, lesion["finding"])
        for r in records
        for lesion in r["image_truth"]
        for region in lesion["regions"]
    }
    assert {(row["report_key"], row["region"], row["finding"]) for row in image} == expected_image
    assert all(row["status"] == "present" for row in image)
    merged = {}
    for r in records:
        for s in r["report_truth"]:
            for region in s["regions"] or [None]:  # a statement naming no place: image level
                cell = (keys[r["study_id"]][0][1], region, s["finding"])
                rank = {"present": 0, "uncertain": 1, "absent": 2}
                if cell not in merged or rank[s["status"]] < rank[merged[cell]]:
                    merged[cell] = s["status"]
    assert {(row["report_key"], row["region"], row["finding"]): row["status"] for row in report} == merged
    for row in report:
        assert texts[row["report_key"]][row["evidence_start"] : row["evidence_end"]] == row["evidence_text"]
    code, _, stderr = cli("import", "synth-gold", out, "--name", "gold", "--db", db)
    assert code == 1 and "already exists" in stderr


def test_import_rejects_malformed_gold(cli, tmp_path: Path, db: Path, cohort: Path):
    bad = tmp_path / "synth_gold.jsonl"
    bad.write_text(json.dumps({"study_id": "1", "image_truth": []}) + "\n")
    with Store(db):  # a clala database without the cohort's reports
        pass
    code, _, stderr = cli("import", "synth-gold", bad, "--name", "x", "--db", db)
    assert code == 1 and "line 1" in stderr and "report_truth" in stderr
    code, _, stderr = cli("import", "synth-gold", cohort, "--name", "x", "--db", db)
    assert code == 1 and "ingest the cohort" in " ".join(stderr.split())
