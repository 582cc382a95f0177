"""Generic bone words placed by the bone their sentence names.

The vocabulary files "fracture" under rib fracture and "degenerative changes" / "osteophytes"
under spinal degenerative changes, the usual meaning in a chest report. A sentence that names
another bone means that bone: "degenerative changes of both shoulders" is shoulder
osteoarthritis, and "fracture of the right humerus" or "degenerative changes of the hip" is no
finding of the vocabulary (bones outside the chest regions), so it is not labeled.
Clavicle and vertebra fractures are the labeler's SPECIFIC_FINDINGS (by region).
"""

from __future__ import annotations

import re

# The words of each finding that name no bone of their own.
GENERIC_WORDS: dict[str, frozenset[str]] = {
    "rib fracture": frozenset({"fracture", "fractures", "fractured"}),
    "spinal degenerative changes": frozenset(
        {
            "degenerative changes",
            "degenerative change",
            "degenerative",
            "osteophyte",
            "osteophytes",
            "osteophytic",
            "osteophytosis",
            "arthritic changes",
            "arthritic",
            "degenerative joint disease",
            "djd",
        }
    ),
}
SHOULDER_FINDING = "shoulder osteoarthritis"
_SHOULDER = re.compile(r"\b(?:shoulders?|acromioclavicular|ac joints?|glenohumeral|humeral heads?)\b", re.I)
_OTHER_BONE = re.compile(
    r"\b(?:humer(?:us|al|i)|femurs?|femoral|hips?|pelvis|pelvic|scapula[re]?|glenoid|knees?|wrists?|elbows?"
    r"|hands?|ankles?|sacrum|sacral|iliac|acetabul(?:um|ar)|costochondral)\b",
    re.I,
)
_OWN_BONE = {
    "rib fracture": re.compile(r"\b(?:ribs?|costal|clavic\w*|vertebra\w*|spin\w*|[tl]\d+)\b", re.I),
    "spinal degenerative changes": re.compile(r"\b(?:spin\w*|vertebra\w*|disc|discs|thoracic|lumbar|cervical)\b", re.I),
}


def bone_finding(finding: str, matched: str, sentence: str, enabled: frozenset[str] | set[str]) -> str | None:
    """The finding a mention means given the bones its sentence names: `finding` itself, the
    shoulder finding, or None (a bone outside the vocabulary's regions: no label)."""
    generic = GENERIC_WORDS.get(finding)
    if generic is None or matched.lower() not in generic or _OWN_BONE[finding].search(sentence):
        return finding
    if finding == "spinal degenerative changes" and _SHOULDER.search(sentence):
        return SHOULDER_FINDING if SHOULDER_FINDING in enabled else None
    if _OTHER_BONE.search(sentence) or _SHOULDER.search(sentence):
        return None
    return finding
