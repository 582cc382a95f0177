"""Regression corpus for the rules labeler on real-style report sentences (issue 14).

Every sentence below was written for this file from the phenomena radiology reports show
(hedges, alternatives, resolution and history, laterality and zones); none is copied from a
dataset. Each case gives the sentence's complete expected labels as (finding, region, status,
temporal); the test reads all of them with the real medspaCy pipeline and reports every failing
case at once.
"""

from __future__ import annotations

import pytest

from labeling.sources.rules import RulesLabeler
from schemas.vocabulary import load_vocabulary

BOTH_LUNGS = ("right lung", "left lung")
# The no-location rule (rules version 8): a finding whose place the sentence does not name has no
# region (image level) unless its words imply its one place; before, it was in both lungs.
NOWHERE = (None,)
BASES = ("right lower lung zone", "left lower lung zone")


def cells(finding: str, regions: tuple[str | None, ...], status: str, temporal: str | None = None):
    return {(finding, region, status, temporal) for region in regions}


def union(*groups: set) -> set:
    return set().union(*groups)


# (phenomenon, sentence, expected labels)
CASES: list[tuple[str, str, set]] = [
    # --- 1. alternatives and hedges: uncertain, and only what the hedge governs -------------------
    (
        "versus",
        "Atelectasis versus pneumonia.",
        union(cells("atelectasis", NOWHERE, "uncertain"), cells("pneumonia", NOWHERE, "uncertain")),
    ),
    (
        "vs. with a place",
        "Left basilar atelectasis vs. pneumonia.",
        union(
            cells("atelectasis", ("left lower lung zone",), "uncertain"),
            cells("pneumonia", ("left lower lung zone",), "uncertain"),
        ),
    ),
    (
        "or",
        "Findings represent atelectasis or pneumonia.",
        union(cells("atelectasis", NOWHERE, "uncertain"), cells("pneumonia", NOWHERE, "uncertain")),
    ),
    (
        "either ... or",
        "Either atelectasis or early pneumonia in the right lower lobe.",
        union(
            cells("atelectasis", ("right lower lung zone",), "uncertain"),
            cells("pneumonia", ("right lower lung zone",), "uncertain"),
        ),
    ),
    (
        "and/or",
        "Bibasilar atelectasis and/or pneumonia.",
        union(cells("atelectasis", BASES, "uncertain"), cells("pneumonia", BASES, "uncertain")),
    ),
    (
        "list with or",
        "Atelectasis, pneumonia or aspiration are possible.",
        union(
            cells("atelectasis", NOWHERE, "uncertain"),
            cells("pneumonia", NOWHERE, "uncertain"),
            cells("aspiration", NOWHERE, "uncertain"),
        ),
    ),
    (
        "or after a negation stays absent",
        "No focal consolidation, pleural effusion or pneumothorax.",
        union(
            cells("consolidation", NOWHERE, "absent"),
            cells("pleural effusion", NOWHERE, "absent"),
            cells("pneumothorax", NOWHERE, "absent"),
        ),
    ),
    (
        "and ends the alternatives",
        "Small right pleural effusion and atelectasis versus pneumonia at the right base.",
        union(
            cells("pleural effusion", ("right lung",), "present"),
            cells("atelectasis", ("right lower lung zone",), "uncertain"),
            cells("pneumonia", ("right lower lung zone",), "uncertain"),
        ),
    ),
    (
        "differential includes",
        "Differential includes atelectasis and pneumonia.",
        union(cells("atelectasis", NOWHERE, "uncertain"), cells("pneumonia", NOWHERE, "uncertain")),
    ),
    (
        "differential diagnosis including",
        "Interstitial prominence, differential diagnosis including edema.",
        union(
            cells("increased reticular markings/ild pattern", NOWHERE, "present"),
            cells("pulmonary edema/hazy opacity", NOWHERE, "uncertain"),
        ),
    ),
    ("probable", "Probable right lower lobe pneumonia.", cells("pneumonia", ("right lower lung zone",), "uncertain")),
    (
        "probable governs its clause only",
        "Probable right lower lobe pneumonia with a small left pleural effusion.",
        union(
            cells("pneumonia", ("right lower lung zone",), "uncertain"),
            cells("pleural effusion", ("left lung",), "present"),
        ),
    ),
    # what is seen stays present, its hedged cause is uncertain (as with "may be due to")
    (
        "probably",
        "Left basilar opacity is probably atelectasis.",
        union(
            cells("lung opacity", ("left lower lung zone",), "present"),
            cells("atelectasis", ("left lower lung zone",), "uncertain"),
        ),
    ),
    (
        "presumed",
        "Presumed aspiration in the right lower lobe.",
        cells("aspiration", ("right lower lung zone",), "uncertain"),
    ),
    (
        "favor X over Y",
        "Favor atelectasis over pneumonia in the lingula.",
        union(
            cells("atelectasis", ("left mid lung zone",), "uncertain"),
            cells("pneumonia", ("left mid lung zone",), "uncertain"),
        ),
    ),
    (
        "suspicious for",
        "Right lower lobe opacity suspicious for pneumonia.",
        union(
            cells("lung opacity", ("right lower lung zone",), "present"),
            cells("pneumonia", ("right lower lung zone",), "uncertain"),
        ),
    ),
    (
        "worrisome for",
        "Right upper lobe consolidation worrisome for pneumonia.",
        union(
            cells("consolidation", ("right upper lung zone",), "present"),
            cells("pneumonia", ("right upper lung zone",), "uncertain"),
        ),
    ),
    (
        "borderline heart size",
        "Heart size is borderline.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "uncertain"),
    ),
    (
        "borderline cardiomegaly",
        "Borderline cardiomegaly.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "uncertain"),
    ),
    (
        "cannot rule out",
        "Cannot rule out a small left pleural effusion.",
        cells("pleural effusion", ("left lung",), "uncertain"),
    ),
    ("not excluded", "Early pneumonia is not excluded.", cells("pneumonia", NOWHERE, "uncertain")),
    (
        "cannot be entirely excluded",
        "A small pneumothorax cannot be entirely excluded.",
        cells("pneumothorax", NOWHERE, "uncertain"),
    ),
    (
        "may be due to",
        "Right basilar opacity may be due to atelectasis.",
        union(
            cells("lung opacity", ("right lower lung zone",), "present"),
            cells("atelectasis", ("right lower lung zone",), "uncertain"),
        ),
    ),
    (
        "could be related to",
        "Left apical scarring could be related to prior tuberculosis.",
        union(
            cells("pleural/parenchymal scarring", ("left apical zone",), "present"),
            cells("granulomatous disease", ("left apical zone",), "uncertain"),
        ),
    ),
    (
        "question of",
        "Question of a left lower lobe infiltrate.",
        cells("infiltration", ("left lower lung zone",), "uncertain"),
    ),
    (
        "is another consideration",
        "Edema is another consideration.",
        cells("pulmonary edema/hazy opacity", NOWHERE, "uncertain"),
    ),
    (
        "free air keeps its negation",
        "No visible free air under the diaphragm.",
        cells("sub-diaphragmatic air", ("abdomen",), "absent"),
    ),
    (
        "not significantly enlarged",
        "The heart is not significantly enlarged.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "absent"),
    ),
    (
        "within limits of normal",
        "Heart size appears within limits of normal.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "absent"),
    ),
    # an organ phrase beside its hedged finding adds nothing of its own
    (
        "organ phrase beside borderline cardiomegaly",
        "Stable cardiac silhouette with borderline cardiomegaly.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "uncertain", "unchanged"),
    ),
    # --- 2. resolution, history and time ---------------------------------------------------------
    (
        "resolved",
        "The left pleural effusion has resolved.",
        cells("pleural effusion", ("left lung",), "absent", "resolved"),
    ),
    (
        "interval resolution of",
        "Interval resolution of the right lower lobe consolidation.",
        cells("consolidation", ("right lower lung zone",), "absent", "resolved"),
    ),
    (
        "no longer seen",
        "The right pneumothorax is no longer seen.",
        cells("pneumothorax", ("right lung",), "absent", "resolved"),
    ),
    ("history of: not labeled", "History of pneumonia.", set()),
    ("status post: not labeled", "Status post treatment for pneumonia.", set()),
    (
        "old healed: present, no temporal",
        "Old healed left rib fractures.",
        cells("rib fracture", ("left lung",), "present"),
    ),
    (
        "prior granulomatous infection: present",
        "Calcified nodes from prior granulomatous infection.",
        cells("granulomatous disease", NOWHERE, "present"),
    ),
    (
        "compared with",
        "Compared with the prior study, the small right effusion is unchanged.",
        cells("pleural effusion", ("right lung",), "present", "unchanged"),
    ),
    (
        "stable keeps the status",
        "Stable mild cardiomegaly.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "present", "unchanged"),
    ),
    (
        "unchanged keeps the status",
        "No pneumothorax, unchanged from prior.",
        cells("pneumothorax", NOWHERE, "absent", "unchanged"),
    ),
    (
        "remains",
        "Heart size remains enlarged.",
        cells("enlarged cardiac silhouette", ("cardiac silhouette",), "present", "unchanged"),
    ),
    # --- 3. laterality and location --------------------------------------------------------------
    (
        "own phrase's side",
        "Elevated hemidiaphragm in the left hemidiaphragm.",
        cells("elevated hemidiaphragm", ("left hemidiaphragm",), "present"),
    ),
    (
        "left hemidiaphragm",
        "Elevation of the left hemidiaphragm.",
        cells("elevated hemidiaphragm", ("left hemidiaphragm",), "present"),
    ),
    (
        "each finding its own side",
        "Right pleural effusion and left basilar atelectasis.",
        union(
            cells("pleural effusion", ("right lung",), "present"),
            cells("atelectasis", ("left lower lung zone",), "present"),
        ),
    ),
    ("bibasilar", "Bibasilar atelectasis.", cells("atelectasis", BASES, "present")),
    ("both bases", "Atelectasis at both bases.", cells("atelectasis", BASES, "present")),
    ("bilateral", "Bilateral pleural effusions.", cells("pleural effusion", BOTH_LUNGS, "present")),
    ("right base", "Opacity at the right base.", cells("lung opacity", ("right lower lung zone",), "present")),
    ("retrocardiac", "Retrocardiac atelectasis.", cells("atelectasis", ("left lower lung zone",), "present")),
    ("lingula", "Scarring in the lingula.", cells("pleural/parenchymal scarring", ("left mid lung zone",), "present")),
    (
        "apices",
        "Pleural thickening at the apices.",
        cells("pleural/parenchymal scarring", ("right apical zone", "left apical zone"), "present"),
    ),
    (
        "perihilar",
        "Perihilar opacities.",
        cells("lung opacity", ("right hilar structures", "left hilar structures"), "present"),
    ),
    (
        "costophrenic angles",
        "Blunting of both costophrenic angles.",
        cells("costophrenic angle blunting", ("right costophrenic angle", "left costophrenic angle"), "present"),
    ),
    (
        "both mid and lower zones",
        "Opacities in both mid and lower lung zones.",
        cells(
            "lung opacity",
            ("right mid lung zone", "right lower lung zone", "left mid lung zone", "left lower lung zone"),
            "present",
        ),
    ),
    (
        "one side, two zones",
        "Consolidation in the right upper and middle lobes.",
        cells("consolidation", ("right upper lung zone", "right mid lung zone"), "present"),
    ),
    (
        "side carried over and",
        "Consolidation at the right base and costophrenic angle.",
        cells("consolidation", ("right lower lung zone", "right costophrenic angle"), "present"),
    ),
    (
        "bilateral not carried over",
        "Scarring at the left base and both apices.",
        cells(
            "pleural/parenchymal scarring", ("left lower lung zone", "right apical zone", "left apical zone"), "present"
        ),
    ),
    # a generic bone word means the bone its sentence names
    (
        "degenerative changes of the shoulders",
        "Degenerative changes of both shoulders.",
        cells("shoulder osteoarthritis", ("right clavicle", "left clavicle"), "present"),
    ),
    ("fracture of a bone outside the chest regions", "Healed fracture of the right humerus.", set()),
    (
        "fracture of a rib stays a rib fracture",
        "Healed fracture of the right sixth rib.",
        cells("rib fracture", ("right lung",), "present"),
    ),
    (
        "degenerative changes of the spine",
        "Mild degenerative changes of the thoracic spine.",
        cells("spinal degenerative changes", ("spine",), "present"),
    ),
    (
        "side before a position word",
        "Right medial basilar atelectasis.",
        cells("atelectasis", ("right lower lung zone",), "present"),
    ),
    (
        "side before a posterior angle",
        "Blunting of the right posterior costophrenic sulcus.",
        cells("costophrenic angle blunting", ("right costophrenic angle",), "present"),
    ),
    (
        "side word naming its own zone",
        "Patchy opacity in the left lingula.",
        cells("lung opacity", ("left mid lung zone",), "present"),
    ),
    # a comparison of sides is a distribution, not a change; against a prior study it is a change
    (
        "right greater than left",
        "Bibasilar consolidation, right greater than left.",
        cells("consolidation", BASES, "present"),
    ),
    (
        "more than on the prior study",
        "Perihilar opacities are more conspicuous than on the prior study.",
        cells("lung opacity", ("right hilar structures", "left hilar structures"), "present", "worsened"),
    ),
    (
        "less likely is not a change",
        "Right basilar atelectasis, less likely pneumonia.",
        union(
            cells("atelectasis", ("right lower lung zone",), "uncertain"),
            cells("pneumonia", ("right lower lung zone",), "uncertain"),
        ),
    ),
    # --- infection is not pneumonia: only the word pneumonia (or pneumonitis) labels it ----------
    ("infection alone", "No evidence of active infection.", set()),
    # --- 4. no location: image level, unless the finding's words imply its one place --------------
    ("no place, negated", "No pneumothorax.", cells("pneumothorax", NOWHERE, "absent")),
    ("no place, present", "Mild atelectasis.", cells("atelectasis", NOWHERE, "present")),
    (
        "implied place",
        "Mild cardiomegaly without pleural effusion.",
        union(
            cells("enlarged cardiac silhouette", ("cardiac silhouette",), "present"),
            cells("pleural effusion", NOWHERE, "absent"),
        ),
    ),
    (
        "an unlocated finding lends no place",
        "Cardiomegaly and small effusions.",
        union(
            cells("enlarged cardiac silhouette", ("cardiac silhouette",), "present"),
            cells("pleural effusion", NOWHERE, "present"),
        ),
    ),
    (
        "a place the finding cannot be in is not lent",
        "New mild cardiac enlargement, with interstitial edema.",
        union(
            cells("enlarged cardiac silhouette", ("cardiac silhouette",), "present", "new"),
            cells("pulmonary edema/hazy opacity", NOWHERE, "present", "new"),
        ),
    ),
    # --- 5. generic vs specific: a texture or shape word on "opacity" is the generic finding -----
    (
        "nodular opacity",
        "Nodular opacity in the right upper lobe.",
        cells("lung opacity", ("right upper lung zone",), "present"),
    ),
    (
        "nodular density",
        "There is a nodular density in the left midlung.",
        cells("lung opacity", ("left mid lung zone",), "present"),
    ),
    (
        "interstitial opacities",
        "Diffuse bilateral interstitial opacities.",
        cells("lung opacity", BOTH_LUNGS, "present"),
    ),
    (
        "a noun names the specific finding",
        "Small right upper lobe nodule.",
        cells("mass/nodule (not otherwise specified)", ("right upper lung zone",), "present"),
    ),
    # --- calcification: the generic words mean what the sentence names ---------------------------
    (
        "calcified aorta",
        "The thoracic aorta is tortuous and calcified.",
        union(
            cells("tortuous aorta", ("aortic arch",), "present"),
            cells("vascular calcification", ("aortic arch",), "present"),
        ),
    ),
    (
        "calcified lymph node",
        "Calcified right paratracheal lymph node.",
        cells("granulomatous disease", ("upper mediastinum",), "present"),
    ),
    (
        "calcified granuloma, words apart",
        "Calcified lingular granuloma.",
        cells("granulomatous disease", ("left mid lung zone",), "present"),
    ),
    (
        "hilar calcifications",
        "Right hilar calcifications.",
        cells("calcified nodule", ("right hilar structures",), "present"),
    ),
    ("calcification of no finding", "Calcified costal cartilage.", set()),
    (
        "calcification beside its cause",
        "Right hilar calcifications suggest prior granulomatous disease.",
        union(
            cells("calcified nodule", ("right hilar structures",), "present"),
            cells("granulomatous disease", ("right hilar structures",), "present"),
        ),
    ),
    (
        "infectious etiology",
        "Right basilar opacity may reflect infectious etiology.",
        cells("lung opacity", ("right lower lung zone",), "uncertain"),
    ),
]


@pytest.fixture(scope="module")
def labeler():
    return RulesLabeler(load_vocabulary())


def test_every_case_reads_as_expected(labeler):
    read = labeler.label_sentences([sentence for _, sentence, _ in CASES])
    failures = []
    for (phenomenon, sentence, expected), labels in zip(CASES, read):
        got = {(label.finding, label.region, label.status, label.temporal) for label in labels}
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            failures.append(f"{phenomenon}: {sentence!r}\n    missing {missing}\n    extra   {extra}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases fail:\n" + "\n".join(failures)


def test_the_corpus_covers_every_phenomenon_of_the_issue():
    said = " ".join(sentence.lower() for _, sentence, _ in CASES)
    for cue in (
        "versus", "vs.", " or ", "either", "and/or", "differential includes", "probable", "probably", "presumed",
        "favor", "suspicious for", "worrisome for", "borderline", "cannot rule out", "not excluded",
        "may be due to", "could be related to", "resolved", "interval resolution", "no longer seen",
        "status post", "history of", "healed", "prior", "compared with", "unchanged", "stable", "left hemidiaphragm",
        "bibasilar", "both bases", "bilateral", "right base", "retrocardiac", "lingula", "apices", "perihilar",
        "costophrenic angles",
    ):  # fmt: skip
        assert cue in said, cue
