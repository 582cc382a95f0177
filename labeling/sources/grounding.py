"""Grounding: find a model's evidence quote in the report text and return exact offsets.

Search order: the exact quote inside the unit's span, then anywhere in the report; then a
normalized alignment (case, runs of whitespace and surrounding punctuation ignored) in the same
order, which yields the corrected offsets of what the report really says. A quote found nowhere
is ungrounded and its label is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EDGE_PUNCT = " \t\r\n.,;:!?\"'()[]"


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
