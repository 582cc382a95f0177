"""Region-decoder sentences in the deterministic report (issue 15, item 7), with the real rules
labeler: a sentence is used only where the rules read it as exactly the lesions predicted in its
region (model/reports/decoder_sentences.py); others fall back to the writer's phrasing; the count
is returned and recorded; and the whole report still reads back as exactly its lesions, also over
random label sets with decoder sentences that are right, wrong, too much or too little."""

from __future__ import annotations

import random

import pytest

from labeling.sources.rules import RulesLabeler
from model.reports.round_trip import check_report
from model.reports.wording import as_sentence, clause
from model.reports.writer import (
    PredictedLesion,
    RegionSentence,
    ReportInputs,
    deterministic_report,
    fallback_report,
    report_text,
    words_of,
    write_reports,
)
from schemas.labels import Severity
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
RLZ, LLZ = "right lower lung zone", "left lower lung zone"
EFFUSION = PredictedLesion(
    finding="pleural effusion", probability=0.9, regions=("right lung",), severity=Severity("mild")
)


@pytest.fixture(scope="module")
def labeler():
    return RulesLabeler(VOCAB)


def written(lesions, sentences, labeler):
    item = ReportInputs(
        report_id="s", lesions=lesions, region_sentences=[RegionSentence(region=r, text=t) for r, t in sentences]
    )
    return deterministic_report(item, VOCAB, decoder_labeler=labeler)


def test_a_consistent_sentence_replaces_the_writers_phrase(labeler):
    atelectasis = PredictedLesion(finding="atelectasis", probability=0.8, regions=(RLZ,))
    report, used = written([EFFUSION, atelectasis], [(RLZ, "Right lower lobe atelectasis.")], labeler)
    assert used == 1
    assert report.findings == (
        "Right lower lobe atelectasis. Small right pleural effusion. No pneumothorax. "
        "The cardiomediastinal silhouette is normal. The hila are normal. No acute osseous abnormality."
    )
    # The impression is still the writer's, from every lesion.
    assert report.impression == "1. Small right pleural effusion. 2. Right basilar atelectasis."
    plain = fallback_report(ReportInputs(report_id="s", lesions=[EFFUSION, atelectasis]), VOCAB)
    assert plain.impression == report.impression and "Right lower lobe" not in plain.findings


def test_a_sentence_covering_part_of_a_lesion_leaves_the_rest_to_the_writer(labeler):
    bibasilar = PredictedLesion(finding="atelectasis", probability=0.8, regions=(RLZ, LLZ))
    report, used = written([bibasilar], [(RLZ, "Right lower lobe atelectasis.")], labeler)
    assert used == 1
    assert report.findings.startswith("Right lower lobe atelectasis. Left basilar atelectasis.")
    assert report.impression == "Bibasilar atelectasis."
    assert check_report(report_text(report), [words_of(bibasilar, VOCAB)], labeler).faithful


@pytest.mark.parametrize(
    "sentence, why",
    [
        ((RLZ, "Right lower lobe consolidation."), "another finding"),
        ((RLZ, "Right lower lobe atelectasis and consolidation."), "a finding more"),
        ((RLZ, "Left lower lobe atelectasis."), "another region"),
        ((RLZ, "Possible right lower lobe atelectasis."), "another status"),
        ((RLZ, "Severe right lower lobe atelectasis."), "another severity"),
        ((RLZ, "Right lower lobe atelectasis without pleural effusion."), "denies a predicted finding"),
        (("right lung", "Atelectasis in the right lung."), "a region the report does not name"),
        ((RLZ, "The lungs are clear."), "says nothing of the lesion"),
    ],
)
def test_an_inconsistent_sentence_falls_back_to_the_writer(labeler, sentence, why):
    atelectasis = PredictedLesion(finding="atelectasis", probability=0.8, regions=(RLZ, "right lung"))
    report, used = written([EFFUSION, atelectasis], [sentence], labeler)
    plain = fallback_report(ReportInputs(report_id="s", lesions=[EFFUSION, atelectasis]), VOCAB)
    assert (used, report) == (0, plain), why


def test_write_reports_uses_decoder_sentences_only_when_asked(labeler):
    atelectasis = PredictedLesion(finding="atelectasis", probability=0.8, regions=(RLZ,))
    item = ReportInputs(
        report_id="s",
        lesions=[atelectasis],
        region_sentences=[RegionSentence(region=RLZ, text="Right lower lobe atelectasis.")],
    )
    with_decoder, without = write_reports([item], decoder_sentences=True) + write_reports([item])
    assert (with_decoder.decoder_sentences, without.decoder_sentences) == (1, 0)
    assert with_decoder.text.startswith("FINDINGS: Right lower lobe atelectasis.")
    assert without.text.startswith("FINDINGS: Right basilar atelectasis.")


def test_the_whole_report_reads_back_as_its_lesions_with_random_decoder_sentences(labeler):
    """300 seeded random label sets; each region of a lesion gets a decoder sentence that is its own
    right phrase, another lesion's, or a phrase with a finding more. Every report reads back as
    exactly its lesions, and right sentences are used."""
    rng = random.Random(15)
    lung_findings = [
        f for f in ("atelectasis", "consolidation", "pneumonia", "lung opacity") if f in VOCAB.finding_names
    ]
    zones = ["right upper lung zone", "right mid lung zone", RLZ, "left upper lung zone", "left mid lung zone", LLZ]
    total_used = 0
    for _ in range(300):
        findings = rng.sample(lung_findings, rng.randint(1, 3))
        lesions = [
            PredictedLesion(finding=f, probability=0.9, regions=tuple(rng.sample(zones, rng.randint(1, 3))))
            for f in findings
        ]
        sentences = []
        for lesion in lesions:
            for region in lesion.regions:
                alone = [words_of(x.model_copy(update={"regions": (region,)}), VOCAB) for x in lesions]
                here = [w for w in alone if region in w.regions]
                kind = rng.choice(("right", "wrong", "more"))
                if kind == "right":
                    text = " ".join(as_sentence(clause([w], VOCAB)) for w in here[:1])
                elif kind == "wrong":
                    text = as_sentence(f"{VOCAB.finding('pneumothorax').report.phrase} in the {region}")  # type: ignore[union-attr]
                else:
                    text = as_sentence(clause(here[:1], VOCAB) + " and small pleural effusion")
                sentences.append((region, text))
        report, used = written(lesions, sentences, labeler)
        total_used += used
        trip = check_report(report_text(report), [words_of(x, VOCAB) for x in lesions], labeler)
        assert trip.faithful, (lesions, sentences, report, trip)
    assert total_used > 50  # right sentences of regions with one lesion are used
