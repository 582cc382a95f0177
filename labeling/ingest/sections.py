"""Section detection in radiology reports.

Radiology report headers are a small closed set written at the start of a line and followed by
a colon ("FINDINGS:", "IMPRESSION:"), plus MIMIC-CXR's "FINAL REPORT" line. A line-anchored
pattern finds them exactly and keeps character offsets; medspaCy's sectionizer rules target
clinical-note categories and would need this same list rewritten as token patterns.
Upper-case headers not in the list are kept under their own lower-cased name.
"""

from __future__ import annotations

import re

from schemas.reports import Section

# Written form (lower-case) -> canonical name.
KNOWN_HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "opinion": "impression",
    "summary": "impression",
    "indication": "indication",
    "indications": "indication",
    "history": "indication",
    "clinical history": "indication",
    "clinical information": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "procedure": "examination",
    "technique": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "wet read": "wet read",
    "addendum": "addendum",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "notification": "notification",
    "final report": "final report",
}

# Sections whose sentences describe the image (what labelers read by default).
FINDING_SECTIONS = ("findings", "impression")

_HEADER = re.compile(
    r"""^[ \t]*
        (?P<header>
            (?P<name>[A-Za-z][A-Za-z ,/&()'-]{0,40}?)[ \t]*:      # NAME:
          | (?P<final>FINAL[ \t]+REPORT)[ \t]*(?=\r?\n|$)          # MIMIC's FINAL REPORT line
        )""",
    re.MULTILINE | re.VERBOSE,
)


def canonical_header(name: str) -> str | None:
    """Canonical section name for a header, or None when it is not a header."""
    key = " ".join(name.lower().split())
    if key in KNOWN_HEADERS:
        return KNOWN_HEADERS[key]
    # Unknown headers count only when written in capitals ("PA AND LATERAL VIEWS:"), so that
    # ordinary sentences with a colon ("Note: ...") stay in their section.
    if name.isupper() and len(key) >= 3:
        return key
    return None


def detect_sections(text: str) -> list[Section]:
    """Split a report into sections; text before the first header is a section named None.

    Sections cover the text in order without overlap; a body excludes its header.
    """
    headers: list[tuple[int, int, str, str]] = []  # (header start, body start, name, header text)
    for match in _HEADER.finditer(text):
        written = match.group("final") or match.group("name")
        name = canonical_header(written)
        if name is None:
            continue
        headers.append((match.start("header"), match.end("header"), name, match.group("header")))
    sections: list[Section] = []
    first_header = headers[0][0] if headers else len(text)
    if text[:first_header].strip():
        sections.append(Section(name=None, header=None, start=0, end=first_header))
    for i, (_, body_start, name, header) in enumerate(headers):
        end = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        sections.append(Section(name=name, header=header, start=body_start, end=end))
    return sections
