import jsonschema
import pytest
from pydantic import ValidationError

from schemas.labels import Evidence, Label, Status, merge_labels
from schemas.llm_output import build_output_model, output_json_schema
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

REPORT = "FINDINGS: Small left pleural effusion. No pneumothorax."


def test_evidence_must_match_its_span():
    ev = Evidence(start=10, end=38, text=REPORT[10:38])
    assert ev.grounded_in(REPORT)
    assert not Evidence(start=11, end=39, text=REPORT[10:38]).grounded_in(REPORT)
    with pytest.raises(ValidationError):
        Evidence(start=10, end=12, text="Small left")
    with pytest.raises(ValidationError):
        Evidence(start=10, end=10, text="")


def test_label_fields_are_validated():
    label = Label.model_validate(
        dict(
            region="left costophrenic angle",
            finding="pleural effusion",
            status="present",
            severity="mild",
            confidence=0.9,
        )
    )
    assert label.status is Status.present
    with pytest.raises(ValidationError):
        Label.model_validate(dict(region=None, finding="pneumothorax", status="maybe"))
    with pytest.raises(ValidationError):
        Label.model_validate(dict(region=None, finding="pneumothorax", status="absent", confidence=1.5))


def test_precedence_present_over_uncertain_over_absent():
    cell = dict(region="left lower lung zone", finding="atelectasis")
    absent = Label.model_validate({**cell, "status": "absent"})
    uncertain = Label.model_validate({**cell, "status": "uncertain"})
    present = Label.model_validate({**cell, "status": "present"})
    other = Label.model_validate(dict(region="right lower lung zone", finding="atelectasis", status="absent"))
    merged = merge_labels([absent, uncertain, other])
    assert sorted((label.region, label.status.value) for label in merged) == [
        ("left lower lung zone", "uncertain"),
        ("right lower lung zone", "absent"),
    ]
    assert {label.status for label in merge_labels([uncertain, present, absent])} == {Status.present}


def test_run_spec_names_are_safe():
    RunSpec(name="gemma-270m_v1", kind=RunKind.llm, vocabulary_version="x")
    with pytest.raises(ValidationError):
        RunSpec(name="bad name; drop table", kind=RunKind.llm, vocabulary_version="x")


def test_output_schema_enumerates_the_vocabulary():
    vocab = load_vocabulary()
    schema = output_json_schema(vocab)
    statement = schema["$defs"]["StatementLabel"]["properties"]
    assert statement["finding"]["enum"] == list(vocab.finding_names)
    assert statement["regions"]["items"]["enum"] == list(vocab.region_names)
    assert set(statement["status"]["enum"]) == {"present", "absent", "uncertain"}
    assert "anyOf" not in str(schema)  # kept to keywords every structured-output backend supports
    answer = {
        "labels": [
            {
                "finding": "pleural effusion",
                "regions": ["left costophrenic angle"],
                "status": "present",
                "severity": "mild",
                "temporal": "none",
                "evidence": "Small left pleural effusion",
            }
        ]
    }
    jsonschema.validate(answer, schema)
    build_output_model(vocab).model_validate(answer)
    bad = {"labels": [dict(answer["labels"][0], finding="ignore previous instructions")]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ValidationError):
        build_output_model(vocab).model_validate(bad)
    with pytest.raises(ValidationError):
        build_output_model(vocab).model_validate({"labels": [dict(answer["labels"][0], regions=["left knee"])]})
