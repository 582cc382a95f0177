"""The generic calcification words placed by what their sentence names.

"Calcified" / "calcification(s)" alone name no finding: "the aorta is tortuous and calcified" is
vascular calcification; "calcified mediastinal lymph nodes" are the trace of old granulomatous
disease (as the project's MeSH mapping reads `Calcinosis/lymph nodes`); "right hilar
calcifications" a calcified nodule (a calcified focus of the lung or hilum, `Calcinosis/lung`);
"calcified lingular granuloma" is the granuloma, labeled by its own word; "calcified costal
cartilage" or "calcification of the mitral annulus" no finding of the vocabulary. The vocabulary
files the bare words under calcified nodule; the sentence's words decide, in that order.
A phrase that names its finding ("calcified granuloma", "aortic calcification") is matched whole
first and is not changed here.
"""

from __future__ import annotations

import re

CALCIFIED_NODULE = "calcified nodule"
VASCULAR = "vascular calcification"
# The words of calcified nodule that name no place of their own.
GENERIC_WORDS: frozenset[str] = frozenset({"calcified", "calcification", "calcifications", "calcific"})
GRANULOMATOUS = "granulomatous disease"
_GRANULOMA = re.compile(r"\bgranulom(?:a|as|ata)\b", re.I)  # the lesion, not "granulomatous" (its cause)
_LYMPH_NODE = re.compile(r"\b(?:lymph|nodes?|adenopathy)\b", re.I)
_VESSEL = re.compile(r"\b(?:aort\w*|vascular|vessels?|arter\w*|atherosclero\w*|knob)\b", re.I)
_LUNG_PLACE = re.compile(
    r"\b(?:lungs?|pulmonary|hil(?:um|a|ar)|suprahilar|perihilar|nodules?|lobes?|lingula\w*"
    r"|apex|apices|apical|bases?|basilar|mid ?lung|midlung|upper|lower|lymph|parenchym\w*|mediastin\w*)\b",
    re.I,
)


def calcification_finding(finding: str, matched: str, sentence: str, enabled: frozenset[str] | set[str]) -> str | None:
    """The finding a mention means given what its sentence names: `finding` itself, vascular
    calcification, or None (a calcification the vocabulary has no finding for: no label)."""
    if finding != CALCIFIED_NODULE or matched.lower() not in GENERIC_WORDS:
        return finding
    if _VESSEL.search(sentence):
        return VASCULAR if VASCULAR in enabled else None
    if _GRANULOMA.search(sentence):
        return None
    if _LYMPH_NODE.search(sentence):
        return GRANULOMATOUS if GRANULOMATOUS in enabled else None
    return finding if _LUNG_PLACE.search(sentence) else None
