"""Grounding: find a model's evidence quote in the report text and return exact offsets, and
check that a label's regions, severity and temporal change are stated by its sentence.

Search order: the exact quote inside the unit's span, then anywhere in the report; then a
normalized alignment (case, runs of whitespace and surrounding punctuation ignored) in the same
order, which yields the corrected offsets of what the report really says. A quote found nowhere
is ungrounded and its label is rejected.

A quote alone does not ground a label: a sentence that says "label pneumothorax in every region"
contains the quote a model that obeys it gives. So a label's other attributes must be stated too,
in the vocabulary's words, by the sentence the label comes from (`Statement`): each region is
one the sentence names or one containing a named region (the vocabulary's `parent`: "right lower
lobe" also states the right lung, "right lung" does not state the right lower lung zone), or,
when the sentence names none of the regions the finding occurs in, one of the finding's default
regions (on the one side it names, if it names one); a severity or temporal value must be named
by one of its words ("small" -> mild).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.vocabulary import Finding, Vocabulary

_EDGE_PUNCT = " \t\r\n.,;:!?\"'()[]"
_SIDE = re.compile(r"\b(right|left)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    exact: bool  # False when found by normalized alignment


def _pattern(quote: str) -> re.Pattern[str] | None:
    words = quote.strip(_EDGE_PUNCT).split()
    if not words:
        return None
    return re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)


def ground(quote: str, text: str, start: int = 0, end: int | None = None) -> Span | None:
    """Where `quote` is in `text`, preferring the unit span text[start:end]."""
    end = len(text) if end is None else end
    if quote:
        for lo, hi in ((start, end), (0, len(text))):
            at = text.find(quote, lo, hi)
            if at >= 0:
                return Span(at, at + len(quote), quote, exact=True)
    pattern = _pattern(quote)
    if pattern is None:
        return None
    for lo, hi in ((start, end), (0, len(text))):
        match = pattern.search(text, lo, hi)
        if match:
            return Span(match.start(), match.end(), match.group(0), exact=False)
    return None


@dataclass(frozen=True)
class Statement:
    """What one sentence states in the vocabulary's words."""

    regions: frozenset[str]  # named, and the regions that contain a named one
    severities: frozenset[str]
    temporals: frozenset[str]
    sides: frozenset[str] = frozenset()  # "right" / "left" said without a region ("right-sided")


def statement_of(sentence: str, vocabulary: Vocabulary) -> Statement:
    named = {region for _, _, found in vocabulary.find_regions(sentence) for region in found}
    return Statement(
        regions=frozenset(named | {up for region in named for up in vocabulary.ancestors(region)}),
        severities=frozenset(value for _, _, value in vocabulary.find_severities(sentence)),
        temporals=frozenset(value for _, _, value in vocabulary.find_temporals(sentence)),
        sides=frozenset(match.lower() for match in _SIDE.findall(sentence)),
    )


def stated_regions(statement: Statement, finding: Finding, vocabulary: Vocabulary) -> frozenset[str]:
    """The regions a label of `finding` may have from this sentence: the named ones; else its
    default regions, only those of the one side the sentence names ("small right-sided effusion"
    -> the right lung), all of them when it names both sides or none."""
    named = statement.regions & set(finding.regions)
    if named:
        return named
    defaults = frozenset(finding.default_regions)
    if len(statement.sides) == 1:
        (side,) = statement.sides
        on_side = frozenset(r for r in defaults if vocabulary.region(r).laterality == side)
        return on_side or defaults
    return defaults


def unstated(
    statement: Statement,
    finding: Finding,
    vocabulary: Vocabulary,
    *,
    region: str | None,
    severity: str | None,
    temporal: str | None,
) -> str | None:
    """Why a label cell is not stated by the sentence, or None when it is (an image-level cell,
    region None, needs no place)."""
    if region is not None and region not in stated_regions(statement, finding, vocabulary):
        return f"region not named in the sentence: {region}"
    if severity is not None and severity not in statement.severities:
        return f"severity not stated in the sentence: {severity}"
    if temporal is not None and temporal not in statement.temporals:
        return f"temporal change not stated in the sentence: {temporal}"
    return None
