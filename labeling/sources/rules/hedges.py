"""How reports hedge and how they state history: ConText rules for hedge words, and the
alternatives rule ("atelectasis versus pneumonia", "either X or Y", "X and/or Y").

A hedge makes each finding it governs uncertain, and only those:
- an adjective or cue before the finding ("probable", "presumed", "suspicious for", "cannot rule
  out", "may be due to") governs what follows it up to a clause break ("with", "and", "but", a
  semicolon), so "probable pneumonia with small left effusion" leaves the effusion present;
- a differential ("differential includes atelectasis and pneumonia") governs its whole list;
- a cue after the finding ("pneumonia is not excluded", "... would be a consideration")
  governs what comes before it;
- findings joined as alternatives ("X or Y", "X versus Y", "X vs. Y", "X and/or Y", "either X
  or Y", "X, Y or Z") are each uncertain, unless a negation governs them ("no effusion or
  pneumothorax" stays absent).

History: a finding named only as the patient's history ("history of", "status post") is not
labeled (ConText's historical flag; counted in the run's skipped figures). A finding the image
still shows, however old ("old healed rib fractures", "prior granulomatous disease", "sequela of
prior granulomatous infection"), is present, with no temporal value.
"""

from __future__ import annotations

import re

from labeling.sources.rules.mentions import Mention

# Category of the words that end a forward hedge's scope (a clause break). Its rules modify no
# target (they allow no target type) and end only the scopes of rules that name it in
# terminated_by: a TERMINATE direction would also end every negation's scope ("no X and Y").
HEDGE_BREAK = "HEDGE_BREAK"
BREAK_WORDS = ("with", "and", "but", "however", "without", "although", ";")

# (literal, category, direction, ends at a clause break)
HEDGE_CONTEXT_RULES: list[tuple[str, str, str, bool]] = [
    *[
        (literal, "POSSIBLE_EXISTENCE", "FORWARD", True)
        for literal in (
            "probable",
            "presumed",
            "presumably",
            "suspected",
            "suspicious for",
            "worrisome for",
            "question of",
            "concern for",
            "raises concern for",
            "could indicate",
            "may indicate",
            "could be",
            "may be",
            "favor",
            "favored",
            "favoring",
            "either",
            "cannot rule out",
            "can not rule out",
            "cannot exclude",
            "can not exclude",
            "may be due to",
            "could be due to",
            "might be due to",
            "may be related to",
            "could be related to",
            "possibly related to",
            "may be secondary to",
            "could be secondary to",
            "correlate clinically for",
            "possibly secondary to",
            "suggesting",
            "alternatively",
            "may include",
            "difficult to exclude",
            "difficult to completely exclude",
        )
    ],
    *[
        (literal, "POSSIBLE_EXISTENCE", "FORWARD", False)
        for literal in (
            "differential includes",
            "differential diagnosis includes",
            "differential diagnosis including",
            "differential including",
            "differential considerations include",
            "differential diagnosis",
            "differential",
        )
    ],
    *[
        (literal, "POSSIBLE_EXISTENCE", "BACKWARD", False)
        for literal in (
            "would be a consideration",
            "is another consideration",
            "is in the differential",
            "cannot be entirely excluded",
            "cannot be completely excluded",
            "is a consideration",
            "is not excluded",
            "are not excluded",
            "cannot be ruled out",
            "can not be ruled out",
            "may be present",
            "could be present",
        )
    ],
    ("probably", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL", True),
    ("borderline", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL", True),
    ("versus", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL", True),
    ("vs", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL", True),
    ("vs.", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL", True),
    # "free" is a negation cue of medspaCy's ("pain free"); in a chest report it is free air or
    # fluid, and as a cue it cut the scope of "no" ("no visible free air under the diaphragm").
    *[(literal, "PSEUDO", "PSEUDO", False) for literal in ("free air", "free intraperitoneal air", "free fluid")],
    ("status post", "HISTORICAL", "FORWARD", True),
    ("s/p", "HISTORICAL", "FORWARD", True),
    *[(word, HEDGE_BREAK, "FORWARD", False) for word in BREAK_WORDS],
]

# What may stand between two findings named as alternatives: "or", "versus", "vs.", "and/or",
# ", less likely" (as "favor X over Y"), a list comma, and the words that qualify the second
# ("or less likely", "or possibly early").
_JOINER = re.compile(
    r"^\s*,?\s*(?P<alt>or|versus|vs\.?|and\s*/\s*or|(?:more|less)\s+likely)?\s*"
    r"(?:(?:less|more|most)\s+likely|possibly|perhaps|early|developing|an?|the|underlying|superimposed"
    r"|right|left|bilateral|upper|mid|middle|lower|lobe|lobar|lung|base|basilar|\s)*$",
    re.IGNORECASE,
)


def alternatives(text: str, mentions: list[Mention]) -> list[set[int]]:
    """Groups of mentions named as alternatives of one another (each becomes uncertain unless
    it is absent): runs of adjacent mentions joined by commas, "or", "versus", "vs." or
    "and/or" in which at least one joiner is an alternative one. "and" ends a run: "effusion and
    atelectasis or pneumonia" hedges the last two only."""
    order = sorted(range(len(mentions)), key=lambda i: mentions[i].start)
    groups: list[set[int]] = []
    run: list[int] = order[:1]
    has_alternative = False
    for previous, current in zip(order, order[1:]):
        gap = text[mentions[previous].end : mentions[current].start]
        joined = _JOINER.match(gap) if mentions[current].start >= mentions[previous].end else None
        if joined is not None and gap.strip():
            run.append(current)
            has_alternative = has_alternative or joined.group("alt") is not None
            continue
        if has_alternative:
            groups.append(set(run))
        run, has_alternative = [current], False
    if has_alternative:
        groups.append(set(run))
    return groups
