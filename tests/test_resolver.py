import pytest

from labeling.sources.llm.resolver import resolve_unit
from labeling.sources.llm.units import Occurrence
from schemas.vocabulary import load_vocabulary

TEXT = "FINDINGS: Small right pleural effusion at the right costophrenic angle. Heart size is normal."
SENTENCE = "Small right pleural effusion at the right costophrenic angle."
VOCAB = load_vocabulary()


def item(**kw):
    return {
        "finding": "pleural effusion",
        "regions": [],
        "status": "present",
        "severity": "none",
        "temporal": "none",
        "evidence": "Small right pleural effusion",
        **kw,
    }


def at(sentence):
    start = TEXT.index(sentence)
    return Occurrence(1, start, start + len(sentence))


def test_regions_from_answer_evidence_or_defaults():
    occ = at(SENTENCE)
    stated, _ = resolve_unit(
        [{"labels": [item(regions=["right costophrenic angle"], severity="mild")]}], occ, TEXT, VOCAB
    )
    assert [(label.region, label.severity and label.severity.value) for label in stated] == [
        ("right costophrenic angle", "mild")
    ]
    from_evidence, _ = resolve_unit([{"labels": [item()]}], occ, TEXT, VOCAB)
    assert [label.region for label in from_evidence] == ["right lung"]
    heart = at("Heart size is normal.")
    default, _ = resolve_unit(
        [{"labels": [item(finding="enlarged cardiac silhouette", status="absent", evidence="Heart size is normal")]}],
        heart,
        TEXT,
        VOCAB,
    )
    assert [(label.region, label.status.value) for label in default] == [("cardiac silhouette", "absent")]
    evidence = default[0].evidence
    assert evidence is not None and TEXT[evidence.start : evidence.end] == "Heart size is normal"


def test_rejections_are_reported_with_reasons():
    occ = at(SENTENCE)
    labels, rejected = resolve_unit(
        [
            {
                "labels": [
                    item(regions=["spine", "right lung"]),
                    item(finding="pneumothorax", evidence="tension pneumothorax"),
                ]
            }
        ],
        occ,
        TEXT,
        VOCAB,
    )
    assert [label.region for label in labels] == ["right lung"]
    assert sorted(r.reason.split(":")[0] for r in rejected) == ["region not allowed", "ungrounded"]


def test_samples_vote_and_confidence_is_agreement():
    occ = at(SENTENCE)
    samples = [{"labels": [item()]}, {"labels": [item()]}, {"labels": [item(status="uncertain")]}, {"labels": []}]
    [label] = resolve_unit(samples, occ, TEXT, VOCAB)[0]
    assert (label.status.value, label.confidence) == ("present", 0.5)
    [tie] = resolve_unit(
        [{"labels": [item(status="absent")]}, {"labels": [item(status="uncertain")]}], occ, TEXT, VOCAB
    )[0]
    assert (tie.status.value, tie.confidence) == ("uncertain", 0.5)  # ties go by precedence


def test_single_sample_confidence_from_logprobs():
    occ = at(SENTENCE)
    [label] = resolve_unit([{"labels": [item()], "mean_logprob": -0.1}], occ, TEXT, VOCAB)[0]
    assert label.confidence == pytest.approx(0.904837, rel=1e-5)
    [label] = resolve_unit([{"labels": [item()]}], occ, TEXT, VOCAB)[0]
    assert label.confidence is None


def test_no_place_given_or_named_is_an_image_level_label():
    """The no-location rule: a finding the model places nowhere, whose evidence names no place and
    whose words imply none, is stored without a region, not in every default region."""
    text = "FINDINGS: No pneumothorax. Mild cardiomegaly."
    start = text.index("No pneumothorax.")
    labels, rejected = resolve_unit(
        [{"labels": [item(finding="pneumothorax", status="absent", evidence="No pneumothorax")]}],
        Occurrence(1, start, start + len("No pneumothorax.")),
        text,
        VOCAB,
    )
    assert [(label.region, label.finding, label.status.value) for label in labels] == [(None, "pneumothorax", "absent")]
    assert rejected == []
