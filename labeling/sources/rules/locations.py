"""Region phrases of a sentence as report wording combines them, on top of the vocabulary's own
phrases (`Vocabulary.find_regions`):

- coordinated zones: "both mid and lower lung zones", "right upper and middle lobes", "upper
  to mid lungs" name every zone listed, on the side named (both sides when none is);
- a side carried over a coordination: in "the right base and costophrenic angle" the unsided
  "costophrenic angle" is the right one, as is "hilum" in "right base and hilum";
- a side word just before a place, with a position word between ("right medial basilar",
  "right posterior costophrenic sulcus", "left lingula"), is that place's side, and part of it;
- a region phrase inside a finding's own phrase ("hemidiaphragm" in "elevated hemidiaphragm")
  places the finding only when the sentence names no other place for it (see labeler).
"""

from __future__ import annotations

import re

from schemas.vocabulary import Vocabulary

_ZONE = {"upper": "upper", "mid": "mid", "middle": "mid", "lower": "lower"}
_COORDINATED_ZONES = re.compile(
    r"\b(?:(?P<side>right|left|both|bilateral)\s+)?"
    r"(?P<zones>(?:upper|mid|middle|lower)(?:\s*(?:,\s*(?:and\s+)?|and|or|to|through)\s*(?:upper|mid|middle|lower))+)"
    r"[\s-]+(?:lung\s+zones?|lung\s+fields?|lungs?|lobes?|zones?)\b",
    re.IGNORECASE,
)
_BOTH_SIDES = re.compile(r"\b(?:both|bilateral(?:ly)?|bi\w+)", re.IGNORECASE)
_ZONE_WORD = re.compile(r"upper|mid|middle|lower", re.IGNORECASE)
_SIDE_BEFORE = re.compile(
    r"\b(?P<side>right|left)\s+(?:(?:medial|lateral|posterior|anterior|inferior|superior)\s+)?$", re.IGNORECASE
)
# What joins two places of one finding: "and", "or", a comma, "to".
_COORDINATION = re.compile(r"^\s*(?:,\s*)?(?:and|or|,|to)\s+(?:the\s+)?$", re.IGNORECASE)


# "right greater than left", "left worse than right": how a bilateral finding is spread; its two
# side words place nothing by themselves.
_SIDE_COMPARISON = re.compile(
    r"\b(?:right|left)(?:\s+(?:side|lung))?\s+(?:greater|larger|more|worse|denser)(?:\s+\w+)?\s+than\s+"
    r"(?:on\s+)?(?:the\s+)?(?:right|left)\b",
    re.IGNORECASE,
)


def compared_sides(text: str) -> list[tuple[int, int]]:
    """Spans of side comparisons ("right greater than left") in `text`."""
    return [(m.start(), m.end()) for m in _SIDE_COMPARISON.finditer(text)]


def region_phrases(text: str, vocabulary: Vocabulary) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, regions) of each place named in `text`, in order of position."""
    coordinated = [
        (m.start(), m.end(), _zones(m.group("side"), m.group("zones"))) for m in _COORDINATED_ZONES.finditer(text)
    ]
    phrases = [
        (s, e, regions)
        for s, e, regions in vocabulary.find_regions(text)
        if not any(cs <= s < ce for cs, ce, _ in coordinated)
    ]
    phrases = sorted(phrases + coordinated)
    return _carry_sides(text, _sides_before(text, phrases, vocabulary), vocabulary)


def _sides_before(
    text: str, phrases: list[tuple[int, int, tuple[str, ...]]], vocabulary: Vocabulary
) -> list[tuple[int, int, tuple[str, ...]]]:
    sided = []
    for start, end, regions in phrases:
        before = _SIDE_BEFORE.search(text, max(0, start - 40), start)  # the few words before it
        if before is not None and not _BOTH_SIDES.search(text[start:end]):
            side = before.group("side").lower()
            one_side = tuple(r for r in regions if vocabulary.region(r).laterality == side)
            if one_side:
                sided.append((before.start(), end, one_side))
                continue
        sided.append((start, end, regions))
    return sided


def _zones(side: str | None, zones: str) -> tuple[str, ...]:
    sides = [side.lower()] if side and side.lower() in ("right", "left") else ["right", "left"]
    levels = dict.fromkeys(_ZONE[z.lower()] for z in _ZONE_WORD.findall(zones))
    return tuple(f"{s} {level} lung zone" for s in sides for level in levels)


def _carry_sides(
    text: str, phrases: list[tuple[int, int, tuple[str, ...]]], vocabulary: Vocabulary
) -> list[tuple[int, int, tuple[str, ...]]]:
    carried = list(phrases)
    for i in range(1, len(carried)):
        start, end, regions = carried[i]
        sides = {vocabulary.region(r).laterality for r in regions}
        if sides != {"right", "left"} or _BOTH_SIDES.search(text[start:end]):
            continue  # a sided, midline or explicitly bilateral phrase keeps what it names
        p_start, p_end, previous = carried[i - 1]
        previous_sides = {vocabulary.region(r).laterality for r in previous}
        if len(previous_sides) != 1 or not previous_sides <= {"right", "left"}:
            continue
        if not _COORDINATION.match(text[p_end:start]):
            continue
        (side,) = previous_sides
        one_side = tuple(r for r in regions if vocabulary.region(r).laterality == side)
        carried[i] = (start, end, one_side or regions)
    return carried
