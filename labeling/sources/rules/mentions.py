"""The rules labeler's working types: a finding mention of a sentence, and the place words that are
assigned to it (a region phrase, or a bare side word)."""

from __future__ import annotations

from typing import NamedTuple


class Mention(NamedTuple):
    """A finding stated in a sentence: its characters, the finding and its status."""

    start: int
    end: int
    finding: str
    status: str  # present | absent | uncertain


class RegionWords(NamedTuple):
    """A region phrase of the sentence ("right lower lobe"): the regions it names."""

    regions: tuple[str, ...]


class SideWord(NamedTuple):
    """A bare laterality word ("left", "bilateral"): the side it selects of a finding's defaults."""

    side: str  # left | right | both


PlaceWords = RegionWords | SideWord
