"""`clala import scene-graphs` and `clala import imagenome-gold` through the real CLI, on a MIMIC-CXR
reports tree ingested with `clala ingest --format mimic`, and scene graphs / gold rows written in
Chest ImaGenome's real formats."""

import json
from pathlib import Path

import pytest

from labeling.store.store import Store

REPORT_1 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with dyspnea.

 FINDINGS:

 There is a small right pleural effusion with
 adjacent atelectasis.  No pneumothorax is seen.  Mild pulmonary
 edema has newly developed.  The cardiac silhouette is normal.

 IMPRESSION:

 Small right pleural effusion.  No pneumothorax.
"""
REPORT_2 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 FINDINGS:

 The lungs are clear.  The cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
STUDY_1, STUDY_2, STUDY_UNKNOWN = "50414267", "53189527", "59999999"


def write_mimic_tree(root: Path) -> Path:
    for subject, study, text in (("10000032", STUDY_1, REPORT_1), ("10000032", STUDY_2, REPORT_2)):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
    return root


def region_entry(image_id, bbox_name, phrases, attributes, severity=None, temporal=None, comparison=None):
    """One `attributes[]` element as Chest ImaGenome writes it (outer lists align with phrases)."""
    empty = [[] for _ in phrases]
    return {
        bbox_name: True,
        "bbox_name": bbox_name,
        "synsets": ["C0000000"],
        "name": bbox_name.title(),
        "attributes": attributes,
        "attributes_ids": [["C0000000"] * len(a) for a in attributes],
        "phrases": phrases,
        "phrase_IDs": [f"{STUDY_1}|{i}" for i in range(len(phrases))],
        "sections": ["finalreport"] * len(phrases),
        "comparison_cues": comparison or empty,
        "temporal_cues": temporal or empty,
        "severity_cues": severity or empty,
        "texture_cues": empty,
        "object_id": f"{image_id}_{bbox_name}",
    }


def scene_graph(image_id, study_id, regions):
    objects = [
        {
            "object_id": f"{image_id}_{name}",
            "bbox_name": name,
            "synsets": ["C0000000"],
            "name": name,
            "x1": 10,
            "y1": 20,
            "x2": 110,
            "y2": 120,
            "width": 100,
            "height": 100,
            "original_x1": 40,
            "original_y1": 80,
            "original_x2": 440,
            "original_y2": 480,
            "original_width": 400,
            "original_height": 400,
        }
        for name in ("right lung", "left lung", "cardiac silhouette")
    ]
    return {
        "image_id": image_id,
        "viewpoint": "PA",
        "patient_id": 10000032,
        "study_id": study_id,
        "gender": "F",
        "reason_for_exam": "___ year old woman with dyspnea.",
        "objects": objects,
        "attributes": regions,
        "relationships": [],
    }


def write_graph(folder: Path, graph: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{graph['image_id']}_SceneGraph.json"
    path.write_text(json.dumps(graph, indent=1))
    return path


def write_scene_graphs(folder: Path) -> Path:
    image_a, image_b = "d7bef063-aaaa", "e1c2d3f4-bbbb"
    write_graph(
        folder / "a",
        scene_graph(
            image_a,
            STUDY_1,
            [
                region_entry(
                    image_a,
                    "right costophrenic angle",
                    ["There is a small right pleural effusion with\n adjacent atelectasis."],
                    [
                        [
                            "anatomicalfinding|yes|pleural effusion",
                            "anatomicalfinding|yes|atelectasis",
                            "nlp|yes|abnormal",
                        ]
                    ],
                    severity=[["severity|yes|mild", "severity|yes|moderate"]],
                ),  # two values: not clean
                region_entry(
                    image_a,
                    "right lung",
                    [
                        "No pneumothorax is seen.",
                        "Small right pleural effusion.",
                        "Mild pulmonary edema has newly developed.",
                    ],  # the report wraps this one
                    [
                        ["anatomicalfinding|no|pneumothorax"],
                        ["anatomicalfinding|yes|pleural effusion", "texture|yes|opacity"],
                        ["anatomicalfinding|yes|pulmonary edema/hazy opacity", "nlp|yes|abnormal"],
                    ],
                    severity=[[], [], ["severity|yes|mild"]],
                    temporal=[[], [], ["temporal|yes|new"]],
                ),
                region_entry(
                    image_a,
                    "left lung",
                    ["No pneumothorax."],
                    [["anatomicalfinding|no|pneumothorax"]],
                    temporal=[["temporal|yes|acute"]],
                    comparison=[["comparison|yes|improved"]],
                ),
                region_entry(
                    image_a,
                    "right cardiophrenic angle",
                    ["Small right pleural effusion."],
                    [["anatomicalfinding|yes|pleural effusion"]],
                ),
                region_entry(
                    image_a,
                    "cardiac silhouette",
                    ["The cardiac silhouette is normal."],
                    [["nlp|yes|normal", "anatomicalfinding|no|pneumothorax"]],
                ),
                region_entry(
                    image_a, "right lung", ["A right chest tube is in place."], [["tubesandlines|yes|chest tube"]]
                ),
            ],
        ),
    )
    # A second image of the same study: its absent loses to the first image's present.
    write_graph(
        folder / "b",
        scene_graph(
            image_b,
            int(STUDY_1),
            [
                region_entry(image_b, "right lung", ["No pneumothorax."], [["anatomicalfinding|no|pleural effusion"]]),
            ],
        ),
    )
    write_graph(
        folder / "b",
        scene_graph(
            "f0000000-cccc",
            STUDY_2,
            [
                region_entry("f0000000-cccc", "right lung", ["The lungs are clear."], [["nlp|yes|normal"]]),
            ],
        ),
    )
    write_graph(
        folder / "b",
        scene_graph(
            "f1111111-dddd",
            STUDY_UNKNOWN,
            [
                region_entry(
                    "f1111111-dddd", "left lung", ["Left effusion."], [["anatomicalfinding|yes|pleural effusion"]]
                ),
            ],
        ),
    )
    return folder


@pytest.fixture
def mimic_db(tmp_path, cli):
    db = tmp_path / "mimic.duckdb"
    code, out, err = cli("ingest", write_mimic_tree(tmp_path / "mimic"), "--format", "mimic", "--db", db)
    assert code == 0, err
    with Store(db) as store:
        stored = {r["study_id"]: r for r in store.list_reports()}
    assert set(stored) == {STUDY_1, STUDY_2}
    assert stored[STUDY_1]["chars"] == len(REPORT_1)  # offsets below are computed on REPORT_1 itself
    return db


def span(text: str, start_text: str, end_text: str | None = None, occurrence: int = 0):
    """(start, end, text) of the `occurrence`-th exact match of `start_text` in REPORT_1."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(start_text, start + 1)
    end = start + len(end_text or start_text)
    return start, end, text[start:end]


def label_rows(db, run):
    with Store(db, read_only=True) as store:
        table = store.labels(run)
        keys = {r["report_key"]: r["study_id"] for r in store.list_reports()}
    return [
        (
            keys[r["report_key"]],
            r["region"],
            r["finding"],
            r["status"],
            r["severity"],
            r["temporal"],
            r["evidence_start"],
            r["evidence_end"],
            r["evidence_text"],
        )
        for r in table.to_pylist()
    ]


def test_scene_graphs_import_labels_regions_with_grounded_evidence(tmp_path, cli, mimic_db):
    folder = write_scene_graphs(tmp_path / "scene_graph")
    code, out, err = cli("import", "scene-graphs", folder, "--name", "sg", "--db", mimic_db)
    assert code == 0, err

    effusion_atelectasis = span(REPORT_1, "There is a small right pleural effusion with\n adjacent atelectasis.")
    impression_effusion = span(REPORT_1, "Small right pleural effusion.")
    no_ptx_seen = span(REPORT_1, "No pneumothorax is seen.")
    no_ptx = span(REPORT_1, "No pneumothorax.")
    # Found by normalized alignment: the report breaks the line; the final period is not quoted.
    edema = span(REPORT_1, "Mild pulmonary\n edema has newly developed")
    assert edema[2] == "Mild pulmonary\n edema has newly developed"
    assert label_rows(mimic_db, "sg") == [
        (
            STUDY_1,
            "cardiac silhouette",
            "pneumothorax",
            "absent",
            None,
            None,
            *span(REPORT_1, "The cardiac silhouette is normal."),
        ),
        (STUDY_1, "left lung", "pneumothorax", "absent", None, "improved", *no_ptx),
        (STUDY_1, "right costophrenic angle", "atelectasis", "present", None, None, *effusion_atelectasis),
        (STUDY_1, "right costophrenic angle", "pleural effusion", "present", None, None, *effusion_atelectasis),
        (STUDY_1, "right lung", "pleural effusion", "present", None, None, *impression_effusion),
        (STUDY_1, "right lung", "pneumothorax", "absent", None, None, *no_ptx_seen),
        (STUDY_1, "right lung", "pulmonary edema/hazy opacity", "present", "mild", "new", *edema),
    ]
    with Store(mimic_db, read_only=True) as store:
        run = store.run("sg")
        covered = store.covered_reports("sg").tolist()
        keys = {r["study_id"]: r["report_key"] for r in store.list_reports()}
    assert sorted(covered) == sorted([keys[STUDY_1], keys[STUDY_2]])  # study 2 has no label but is covered
    assert run.kind.value == "import" and run.status.value == "complete"
    assert run.source == str(folder.resolve())
    assert run.params["kind"] == "scene-graphs" and run.params["files"] == 4 and len(run.params["sha256"]) == 64
    assert run.params["skipped"] == {
        "bbox name outside the 29 regions": 1,
        "study not in the database": 1,
        "category tubesandlines not enabled in the vocabulary (--enable tubesandlines)": 1,
    }
    assert run.vocabulary_version.startswith("chest-imagenome@")
    assert "2 reports, 7 labels (absent 3, present 4)" in out
    assert "right cardiophrenic angle" in out and STUDY_UNKNOWN in out
    # The cardiac silhouette's phrase "The cardiac silhouette is normal." is grounded, but
    # pneumothorax is not a finding the vocabulary places there: kept and counted.
    assert "labels in a region the vocabulary does not list for the finding (kept): 1" in out
    assert "labels without evidence (sentence not found in the report text): 0" in out


def test_scene_graphs_enabled_category_without_grounding(tmp_path, cli, mimic_db):
    folder = write_scene_graphs(tmp_path / "scene_graph")
    code, out, err = cli(
        "import", "scene-graphs", folder, "--name", "sg-tubes", "--db", mimic_db, "--enable", "tubesandlines"
    )
    assert code == 0, err
    tube = [r for r in label_rows(mimic_db, "sg-tubes") if r[2] == "chest tube"]
    # The phrase is not in the report: the label is kept without evidence and counted.
    assert tube == [(STUDY_1, "right lung", "chest tube", "present", None, None, None, None, None)]
    assert "labels without evidence (sentence not found in the report text): 1" in out


def test_scene_graphs_bad_input_stores_nothing(tmp_path, cli, mimic_db):
    folder = write_scene_graphs(tmp_path / "scene_graph")
    bad = folder / "c" / "0bad_SceneGraph.json"
    bad.parent.mkdir()
    bad.write_text('{"image_id": "x", "study_id": ')
    before = mimic_db.read_bytes()
    code, out, err = cli("import", "scene-graphs", folder, "--name", "sg", "--db", mimic_db)
    assert code == 1
    assert err.strip().count("\n") == 0 and str(bad) in err and "not valid JSON" in err
    bad.write_text(json.dumps({"image_id": "x", "patient_id": 1, "attributes": [], "objects": []}))
    code, out, err = cli("import", "scene-graphs", folder, "--name", "sg", "--db", mimic_db)
    assert code == 1
    assert err.strip().count("\n") == 0 and str(bad) in err and "'study_id' is missing" in err
    bad.write_text(
        json.dumps(
            scene_graph(
                "x", STUDY_2, [region_entry("x", "left lung", ["a", "b"], [["anatomicalfinding|yes|pneumothorax"]])]
            )
        )
    )
    code, out, err = cli("import", "scene-graphs", folder, "--name", "sg", "--db", mimic_db)
    assert code == 1 and str(bad) in err and "'phrases' must be a list as long as 'attributes'" in err
    with Store(mimic_db, read_only=True) as store:
        assert store.runs() == []
    assert mimic_db.read_bytes() == before


GOLD_HEADER = [
    "patient_id",
    "study_id",
    "image_id",
    "row_id",
    "sentence",
    "bbox",
    "relation",
    "label_name",
    "categoryID",
    "context",
]


def gold_row(study, sentence, bbox, relation, label, category, context, image="d7bef063-aaaa.dcm"):
    return ["10000032", study, image, f"{study}|3", sentence, bbox, relation, label, category, context]


def write_gold(path: Path, rows, header=GOLD_HEADER) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


def test_imagenome_gold_import(tmp_path, cli, mimic_db):
    gold = write_gold(
        tmp_path / "gold_attributes_relations_500pts_500studies1st.txt",
        [
            gold_row(
                STUDY_1,
                "Small right pleural effusion.",
                "right lung",
                "1",
                "pleural effusion",
                "anatomicalfinding",
                "yes",
            ),
            gold_row(STUDY_1, "Small right pleural effusion.", "right lung", "1", "abnormal", "nlp", "yes"),
            gold_row(STUDY_1, "No pneumothorax is seen.", "left lung", "0", "pneumothorax", "anatomicalfinding", "no"),
            gold_row(STUDY_1, "No pneumothorax is seen.", "unknown", "0", "pneumothorax", "anatomicalfinding", "no"),
            gold_row(
                STUDY_1,
                "Mild pulmonary edema has newly developed.",
                "right lung",
                "1",
                "fluid overload/heart failure",
                "disease",
                "yes",
                image="e1c2d3f4-bbbb.dcm",
            ),
            gold_row(
                STUDY_1, "The lungs are low.", "right lung", "1", "low lung volumes", "technicalassessment", "yes"
            ),
            gold_row(STUDY_2, "The lungs are clear.", "right lung", "1", "normal", "nlp", "yes"),
            gold_row(STUDY_UNKNOWN, "Left effusion.", "left lung", "1", "pleural effusion", "anatomicalfinding", "yes"),
        ],
    )
    code, out, err = cli("import", "imagenome-gold", gold, "--name", "gold", "--db", mimic_db)
    assert code == 0, err
    assert label_rows(mimic_db, "gold") == [
        (STUDY_1, "left lung", "pneumothorax", "absent", None, None, *span(REPORT_1, "No pneumothorax is seen.")),
        (
            STUDY_1,
            "right lung",
            "fluid overload/heart failure",
            "present",
            None,
            None,
            *span(REPORT_1, "Mild pulmonary\n edema has newly developed"),
        ),
        (
            STUDY_1,
            "right lung",
            "pleural effusion",
            "present",
            None,
            None,
            *span(REPORT_1, "Small right pleural effusion."),
        ),
    ]
    with Store(mimic_db, read_only=True) as store:
        run = store.run("gold")
        assert len(store.covered_reports("gold")) == 2
    assert run.params["kind"] == "imagenome-gold" and run.params["rows"] == 8
    assert run.params["skipped"] == {
        "bbox name outside the 29 regions": 1,
        "study not in the database": 1,
        "category technicalassessment not enabled in the vocabulary (--enable technicalassessment)": 1,
    }


def test_imagenome_gold_bad_input(tmp_path, cli, mimic_db):
    row = gold_row(STUDY_1, "No pneumothorax is seen.", "left lung", "0", "pneumothorax", "anatomicalfinding", "no")
    header = [c for c in GOLD_HEADER if c != "label_name"]
    missing = write_gold(tmp_path / "gold_missing.txt", [row[:7] + row[8:]], header=header)
    code, _, err = cli("import", "imagenome-gold", missing, "--name", "gold", "--db", mimic_db)
    assert code == 1 and str(missing) in err and "column 'label_name' is missing" in err
    bad = write_gold(tmp_path / "gold_bad.txt", [row, row[:6] + ["2"] + row[7:]])
    code, _, err = cli("import", "imagenome-gold", bad, "--name", "gold", "--db", mimic_db)
    assert code == 1 and err.strip().count("\n") == 0
    assert f"{bad}: line 3: column 'relation': '2'" in err
    with Store(mimic_db, read_only=True) as store:
        assert store.runs() == []
