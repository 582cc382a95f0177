"""Radiology wording of one lesion: "[possible] [new] [small] <location> <finding>" or
"<finding> <location>", from the vocabulary's report block (phrases per finding, location terms
per region group, severity, size and temporal words), so the words are versioned with the
vocabulary and not kept in code.

Order, as radiologists write it: certainty, then temporal change, then severity, then the
location adjective, then the noun; a location without an adjective follows the noun as a
prepositional phrase ("nodule in the right upper lung zone"). A finding that can only be in one
region, or whose own words name where it is, is written without a location ("cardiomegaly",
"elevated hemidiaphragms"). A "resolved" temporal value is not
written: the lesion is then no longer present, which a present lesion cannot say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.reports.grouping import canonical_regions, location_terms, report_wording
from schemas.vocabulary import ReportLocation, Vocabulary


@dataclass(frozen=True)
class LesionWords:
    """What one lesion says: the parts a sentence is made of, and the key that lets lesions share one."""

    finding: str
    regions: tuple[str, ...]  # canonical
    qualifiers: tuple[str, ...]  # certainty, temporal, severity words, in that order
    terms: tuple[ReportLocation, ...]
    status: str = "present"  # or "uncertain"
    severity: str | None = None
    temporal: str | None = None  # as written: "resolved" is not

    @property
    def shares_with(self) -> tuple:
        """Lesions with equal keys can share a sentence: one location term (or none) and the same words."""
        return (self.regions, self.qualifiers) if len(self.terms) <= 1 else (self.finding, self.regions)


def lesion_words(
    finding: str,
    regions: Sequence[str],
    vocabulary: Vocabulary,
    *,
    severity: str | None = None,
    temporal: str | None = None,
    uncertain: bool = False,
) -> LesionWords:
    wording = report_wording(vocabulary)
    spec = vocabulary.finding(finding)
    words = spec.report
    assert words is not None  # the loader requires wording for every finding of a worded vocabulary
    qualifiers = []
    if uncertain:
        qualifiers.append(wording.uncertain_word)
    if temporal in wording.temporal_words:
        qualifiers.append(wording.temporal_words[temporal])  # type: ignore[index]
    if severity is not None:
        qualifiers.append((wording.size_words if words.size_words else wording.severity_words)[severity])  # type: ignore[index]
    canonical = canonical_regions(regions or spec.default_regions, vocabulary)
    # Said without a place only where the finding's words alone are read as that place: its only
    # region, its one default region, or the regions its own words name ("elevated hemidiaphragms"
    # is both hemidiaphragms; "at both hemidiaphragms" would say it twice).
    named_by_words = {region for _, _, found in vocabulary.find_regions(words.phrase) for region in found}
    only_place = (
        len(spec.regions) == 1
        or (bool(named_by_words) and set(canonical) == named_by_words)
        or (len(spec.default_regions) == 1 and canonical == spec.default_regions and not named_by_words)
    )
    terms = () if only_place else tuple(location_terms(canonical, vocabulary))
    written_temporal = temporal if temporal in wording.temporal_words else None
    status = "uncertain" if uncertain else "present"
    return LesionWords(finding, canonical, tuple(qualifiers), terms, status, severity, written_temporal)


def noun(words: LesionWords, vocabulary: Vocabulary) -> str:
    spec = vocabulary.finding(words.finding).report
    assert spec is not None
    sides = {vocabulary.region(r).laterality for r in words.regions}
    return spec.plural if spec.plural and {"right", "left"} <= sides else spec.phrase


def adjective(term: ReportLocation, finding: str, vocabulary: Vocabulary) -> str | None:
    """The term before the noun, or None; a sided finding names a whole lung by its side alone."""
    spec = vocabulary.finding(finding).report
    assert spec is not None
    if spec.sided and len(term.regions) == 1 and term.regions[0] in report_wording(vocabulary).covers:
        side = vocabulary.region(term.regions[0]).laterality
        if side in ("right", "left"):
            return side
    return term.adjective


def clause(group: Sequence[LesionWords], vocabulary: Vocabulary) -> str:
    """One clause for lesions that share location and words: "small bilateral pleural effusions",
    "bibasilar atelectasis and consolidation", "nodules in the right upper lung zone"."""
    first = group[0]
    nouns = [noun(words, vocabulary) for words in group]
    listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    parts = list(first.qualifiers)
    report = vocabulary.finding(first.finding).report
    assert report is not None
    placed = report.placed_words(first.regions)
    before = adjective(first.terms[0], first.finding, vocabulary) if len(first.terms) == 1 else None
    if placed and len(group) == 1:
        parts.append(placed)
    elif before:
        parts.append(_merged(before, listed))
    else:
        parts.append(listed)
        places = [term.phrase for term in first.terms]
        if places:
            parts.append(places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1])
    return " ".join(parts)


def _merged(before: str, after: str) -> str:
    """ "right hilar" + "hilar enlargement" -> "right hilar enlargement": a word said once."""
    head, tail = before.split(), after.split()
    for n in range(min(len(head), len(tail)), 0, -1):
        if head[-n:] == tail[:n]:
            return " ".join(head + tail[n:])
    return f"{before} {after}"


def as_sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
